"""`ibnetdiscover` output: switches and channel adapters with their port-to-port links and link widths/speeds.

Builds the switch graph (leaves are the switches with hosts, upper tiers by distance from them), names hosts from
the CA NodeDescription ('host mlx5_0' or 'host HCA-1'), and keeps every link below 4X or below the fabric's
common speed as evidence of a degraded link.
"""

from __future__ import annotations

import re
from collections import Counter, deque

from fabricbench.errors import UsageError
from fabricbench.topology.discover.facts import FabricFacts, Report

_NODE = re.compile(r'^\s*(Switch|Ca|Rt)\s+(\d+)\s+"([^"]+)"\s*(?:#\s*"([^"]*)")?(.*)$')
_PORT = re.compile(r'^\s*\[(\d+)\](?:\(([0-9a-fA-F]+)\))?\s+"([^"]+)"\[(\d+)\](?:\(([0-9a-fA-F]+)\))?\s*(?:#(.*))?$')
_LINK = re.compile(r"\b(\d+)x(SDR|DDR|QDR|FDR10|FDR|EDR|HDR|NDR|XDR)\b", re.IGNORECASE)
LANE_GBITS = {"SDR": 2.0, "DDR": 4.0, "QDR": 8.0, "FDR10": 10.0, "FDR": 13.64, "EDR": 25.0, "HDR": 50.0,
              "NDR": 100.0, "XDR": 200.0}  # data rate per lane after encoding (IBTA)
_NAMELESS = re.compile(r"(Mellanox|ConnectX|InfiniHost|MT\d{4})", re.IGNORECASE)


def _host_of(desc: str | None) -> str | None:
    if not desc:
        return None
    if "aggregation node" in desc.lower():
        return None
    first = desc.split()[0] if desc.split() else ""
    if not first or _NAMELESS.search(first) or _NAMELESS.match(desc):
        return None
    return first


def parse(text: str, source: str = "ibnetdiscover") -> tuple[FabricFacts, Report]:
    report = Report()
    nodes: dict[str, dict] = {}
    links: dict[frozenset, dict] = {}
    current = None
    bad_lines = 0
    for lineno, raw in enumerate(text.replace("\r", "").split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#") or "=" in line.split()[0] or line.endswith("Nodes"):
            continue
        m = _NODE.match(line)
        if m:
            kind, nports, guid, desc, _rest = m.groups()
            current = guid
            nodes[guid] = {"kind": kind.lower(), "ports": int(nports), "desc": desc or guid}
            continue
        m = _PORT.match(line)
        if m and current is not None:
            lport, _lguid, peer, rport, _rguid, comment = m.groups()
            speed = _LINK.search(comment or "")
            key = frozenset([(current, int(lport)), (peer, int(rport))])
            entry = links.setdefault(key, {"a": current, "b": peer, "ports": (int(lport), int(rport))})
            if speed:
                width, lane = int(speed.group(1)), speed.group(2).upper()
                entry.update({"width": width, "speed": lane, "gbits": width * LANE_GBITS[lane]})
            peer_desc = re.search(r'"([^"]*)"', comment or "")
            if peer not in nodes and peer_desc:
                nodes.setdefault(peer, {"kind": "switch" if peer.startswith("S-") else "ca", "ports": 0,
                                        "desc": peer_desc.group(1), "seen_only_as_peer": True})
            continue
        bad_lines += 1
        if bad_lines <= 3:
            report.unread.append(f"{source}: line {lineno} unreadable: {line[:60]!r}")
    if bad_lines > 3:
        report.unread.append(f"{source}: {bad_lines} unreadable lines in all")
    switches = [g for g, n in nodes.items() if n["kind"] == "switch"]
    if not switches or not links:
        raise UsageError(f"{source}: nothing to build a tree from ({sum(1 for n in nodes.values() if n['kind'] == 'ca')} "
                         f"CA(s), {len(switches)} switch(es), {len(links)} link(s)); truncated or run on a host "
                         "that sees no switch?")
    # hosts per switch
    names = {}
    for g in switches:
        desc = nodes[g]["desc"]
        label = desc.split(";")[-1].split(":")[0].strip() if ";" in desc else desc.strip()
        names[g] = re.sub(r"\s+", "-", label) or g
    dup = Counter(names.values())
    for g in switches:
        if dup[names[g]] > 1:
            names[g] = f"{names[g]}-{g[-6:]}"
    adjacency: dict[str, set] = {g: set() for g in switches}
    capacity: dict[frozenset, float] = {}
    hosts_of: dict[str, list[str]] = {g: [] for g in switches}
    host_rates: list[float] = []
    nameless = sharp = 0
    degraded = []
    speeds = Counter(l.get("speed") for l in links.values() if l.get("speed"))
    common = speeds.most_common(1)[0][0] if speeds else None
    ports_per_host: Counter = Counter()
    for entry in links.values():
        a, b = entry["a"], entry["b"]
        if entry.get("width") and (entry["width"] < 4 or (common and entry["speed"] != common)):
            degraded.append(f"{nodes.get(a, {}).get('desc', a)} port {entry['ports'][0]} <-> "
                            f"{nodes.get(b, {}).get('desc', b)} port {entry['ports'][1]}: {entry['width']}x{entry['speed']}")
        kinds = (nodes.get(a, {}).get("kind"), nodes.get(b, {}).get("kind"))
        if kinds == ("switch", "switch"):
            if a == b:
                continue
            adjacency[a].add(b)
            adjacency[b].add(a)
            key = frozenset([a, b])
            capacity[key] = capacity.get(key, 0.0) + entry.get("gbits", 0.0) / 8
        elif "switch" in kinds:
            sw, ca = (a, b) if kinds[0] == "switch" else (b, a)
            desc = nodes.get(ca, {}).get("desc", "")
            if "aggregation node" in desc.lower():
                sharp += 1
                continue
            host = _host_of(desc)
            if host is None:
                nameless += 1
                host = f"ca-{ca[-8:]}"
            if host not in hosts_of[sw]:
                hosts_of[sw].append(host)
            ports_per_host[host] += 1
            if entry.get("gbits"):
                host_rates.append(entry["gbits"] / 8)
    leaves = [g for g in switches if hosts_of[g]]
    if not leaves:
        raise UsageError(f"{source}: no switch has a host attached; nothing to place hosts on")
    level = {g: 0 for g in leaves}
    queue = deque(leaves)
    while queue:
        g = queue.popleft()
        for nb in adjacency[g]:
            if nb not in level:
                level[nb] = level[g] + 1
                queue.append(nb)
    unreached = [g for g in switches if g not in level]
    if unreached:
        report.unread.append(f"{source}: {len(unreached)} switch(es) not connected to any host's switch (left out)")
    facts = FabricFacts(source=source, link_layer="ib")
    order = {g: (level[g], names[g]) for g in level}
    for g in sorted(level, key=lambda x: order[x]):
        children = sorted((nb for nb in adjacency[g] if nb in level and order[nb] < order[g]), key=lambda x: order[x])
        parents = [nb for nb in adjacency[g] if nb in level and order[nb] > order[g]]
        up = sum(capacity[frozenset([g, p])] for p in parents)
        facts.switches.append({"name": names[g], "switches": [names[c] for c in children], "nodes": hosts_of[g],
                               **({"uplink_rate": up} if up > 0 else {})})
    if host_rates:
        facts.host_port_rate = Counter(host_rates).most_common(1)[0][0]
    facts.host_ports = max(ports_per_host.values()) if ports_per_host else None
    fewer = sum(1 for count in ports_per_host.values() if count < (facts.host_ports or 0))
    if fewer:
        report.unread.append(f"{source}: {fewer} host(s) show fewer than {facts.host_ports} CA ports (their other "
                             f"ports are not in this dump, or unnamed CAs hide them); the topology gives every host "
                             f"{facts.host_ports}")
    hosts = {h for hs in hosts_of.values() for h in hs}
    report.read.append(f"{source}: {len(switches)} switches ({len(leaves)} with hosts), {len(hosts)} hosts, "
                       f"{len(links)} links, common link speed {common or 'unknown'}")
    if nameless:
        report.unread.append(f"{source}: {nameless} CA(s) without a host name in their NodeDescription "
                             "(named ca-<guid>)")
    if sharp:
        report.read.append(f"{source}: {sharp} SHARP aggregation node(s) (not hosts)")
    same_level = sum(1 for g in level for nb in adjacency[g] if nb in level and level[nb] == level[g]) // 2
    if same_level:
        report.unread.append(f"{source}: {same_level} switch-to-switch link(s) within one tier; oriented by name")
    report.evidence = {"ib_degraded_links": degraded, "ib_link_speeds": dict(speeds)}
    return facts, report
