"""Evidence source: NIC port state (ibstat, ibstatus, ibv_devinfo, sysfs; fabricbench.linkstate) against the
topology, else against the same port on the other hosts.

With a topology, only the ports it lists are judged (a host's Ethernet ports that are down by design are not
its business): a port not Active/LinkUp, a rate below the topology's, or the wrong link layer is a NIC verdict
with the tool's own words as evidence. Without one, a port is judged against the same CA port on the other hosts
(at least 3): down where the others are up, or slower than their common rate.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from fabricbench.analyze.evidence import Context, Evidence, source

LAYER = {"ib": "InfiniBand", "roce": "Ethernet", "ethernet": "Ethernet"}
MIN_PEERS = 3


def _words(p) -> str:
    parts = [f"state {p.state or '?'}"]
    if p.physical_state:
        parts.append(f"physical state {p.physical_state}")
    if p.rate_gbps is not None:
        parts.append(f"rate {p.rate_gbps:g} Gb/s" + (f" ({p.width})" if p.width else ""))
    if p.link_layer:
        parts.append(f"link layer {p.link_layer}")
    return f"{p.source}: " + ", ".join(parts)


def _ev(p, host: str, deficit: float, summary: str, basis: str, details: list[str], conf: float,
        expected: str = "") -> Evidence:
    return Evidence(source="link-state", component=f"{host}:{p.ca}" + (f":{p.port}" if p.port != 1 else ""),
                    kind="nic", deficit=deficit, support=1, noise=0.0, basis=basis, fact=True, confidence=conf,
                    summary=summary, details=details + ([expected] if expected else []), hosts=[host],
                    own_host=host, identifiers={"host": host, "nic": p.ca, "port": p.port},
                    retest=[f"ibstat {p.ca} {p.port} on {host}; reseat or replace the cable/transceiver if it stays "
                            "down or slow, then ib_write_bw against a healthy host"])


def _against_topology(ports, topo, host: str) -> tuple[list[Evidence], int]:
    out: list[Evidence] = []
    judged = 0
    by_name = {(p.ca, p.port): p for p in ports}
    for nic in topo.node_type.nics:
        want_layer = LAYER.get(nic.link_layer)
        if want_layer is None:  # emulated lab links have no RDMA port to read
            continue
        judged += 1
        p = by_name.get((nic.name, nic.port))
        expected = f"expected by topology {topo.name}: {nic.name} port {nic.port} up, {nic.rate * 8:g} Gb/s, {want_layer}"
        if p is None:
            if ports:
                out.append(Evidence(source="link-state", component=f"{host}:{nic.name}", kind="nic", deficit=1.0,
                                    support=1, noise=0.0, basis="topology", fact=True, confidence=0.7,
                                    summary=f"{host} {nic.name}: not in the link-state output although the topology "
                                            "expects it (device missing, driver not loaded, or renamed)",
                                    details=[expected, f"ports listed: {', '.join(q.name for q in ports[:12])}"],
                                    hosts=[host], own_host=host, identifiers={"host": host, "nic": nic.name},
                                    retest=[f"ibstat on {host}; lspci | grep -i mellanox; check the driver"]))
            continue
        if not p.active or (p.physical_state and p.physical_state != "LinkUp"):
            why = ("no cable, or the far end is down" if p.physical_state == "Polling" else
                   "disabled (administratively or by the switch)" if p.physical_state == "Disabled" else
                   "link up but not configured by the subnet manager" if p.physical_state == "LinkUp" else
                   "not up")
            out.append(_ev(p, host, 1.0, f"{host} {p.ca} port {p.port} is {p.state or '?'}"
                           f"{' (' + p.physical_state + ')' if p.physical_state else ''}: {why}; the topology "
                           f"expects it up at {nic.rate * 8:g} Gb/s", "topology", [_words(p)], 0.95, expected))
            continue
        if p.link_layer and p.link_layer != want_layer:
            out.append(_ev(p, host, 1.0, f"{host} {p.ca} runs {p.link_layer} where the topology expects {want_layer} "
                           "(port type set wrong in firmware: mlxconfig LINK_TYPE)", "topology", [_words(p)], 0.9,
                           expected))
            continue
        if p.rate_gbps is not None and p.rate_gbps < 0.99 * nic.rate * 8:
            deficit = 1.0 - p.rate_gbps / (nic.rate * 8)
            out.append(_ev(p, host, deficit, f"{host} {p.ca} port {p.port} links at {p.rate_gbps:g} Gb/s"
                           f"{' (' + p.width + ')' if p.width else ''}, {100 * deficit:.0f}% below the "
                           f"{nic.rate * 8:g} Gb/s the topology expects (lanes down or a lower speed negotiated: "
                           "cable, transceiver or switch port)", "topology", [_words(p)], 0.95, expected))
    return out, judged


def _against_peers(by_host: dict[str, list]) -> tuple[list[Evidence], int]:
    """Each CA port against the same CA port on the other hosts."""
    slots: dict[tuple[str, int], dict[str, object]] = defaultdict(dict)
    for host, ports in by_host.items():
        for p in ports:
            slots[(p.ca, p.port)][host] = p
    out: list[Evidence] = []
    judged = 0
    for (ca, port), hosts in sorted(slots.items()):
        if len(hosts) < MIN_PEERS + 1:
            continue
        judged += len(hosts)
        up = {h: p for h, p in hosts.items() if p.active and p.link_up}
        if len(up) * 2 <= len(hosts):
            continue  # down on most hosts: by design (an unused Ethernet port), not a fault
        layers = statistics.multimode([p.link_layer for p in up.values()])
        rates = [p.rate_gbps for p in up.values() if p.rate_gbps]
        common = statistics.median(rates) if rates else None
        for host, p in sorted(hosts.items()):
            peers = f"{len(up)} of {len(hosts)} hosts have {ca} port {port} up" + (
                f" at {common:g} Gb/s" if common else "")
            if host not in up:
                out.append(_ev(p, host, 1.0, f"{host} {ca} port {port} is {p.state or '?'}"
                               f"{' (' + p.physical_state + ')' if p.physical_state else ''} where the other hosts' "
                               "is up", "fleet", [_words(p), peers], 0.85))
            elif len(layers) == 1 and p.link_layer and p.link_layer != layers[0]:
                out.append(_ev(p, host, 1.0, f"{host} {ca} runs {p.link_layer} where the other hosts run "
                               f"{layers[0]}", "fleet", [_words(p), peers], 0.85))
            elif common and p.rate_gbps and p.rate_gbps < 0.99 * common:
                deficit = 1.0 - p.rate_gbps / common
                out.append(_ev(p, host, deficit, f"{host} {ca} port {port} links at {p.rate_gbps:g} Gb/s, "
                               f"{100 * deficit:.0f}% below the {common:g} Gb/s of the same port on the other hosts",
                               "fleet", [_words(p), peers], 0.85))
    return out, judged


@source("link-state", order=50)
def link_state(ctx: Context) -> list[Evidence]:
    ports = ctx.dataset.extra.get("link_state") or []
    if not ports:
        return []
    by_host: dict[str, list] = defaultdict(list)
    unnamed = 0
    for p in ports:
        if p.host:
            by_host[p.host].append(p)
        else:
            unnamed += 1
    res = ctx.res
    res.hosts = sorted(set(res.hosts) | set(by_host))
    if unnamed:
        res.caveats.append(f"link state: {unnamed} port(s) from an input that names no host (give --host, a "
                           "'host: ' prefix per line, or a file named after the host); not judged")
    topo = getattr(ctx.fabric, "topo", None) if ctx.fabric is not None else None
    evidence: list[Evidence] = []
    if topo is not None and topo.node_type.nics:
        judged = 0
        for host, hp in sorted(by_host.items()):
            ev, n = _against_topology(hp, topo, host)
            evidence += ev
            judged += n
        ctx.compared("link state", "topology", f"{judged} expected port(s) on {len(by_host)} host(s), {topo.name}")
    else:
        evidence, judged = _against_peers(by_host)
        if judged:
            ctx.compared("link state", "fleet", f"each port against the same port on {len(by_host)} hosts")
        else:
            ctx.compared("link state", "nothing", "no topology and fewer than 4 hosts to compare ports across")
            res.inconclusive.append(f"link state of {len(by_host)} host(s): nothing to compare it with (give "
                                    "--topology, or the output of at least 4 hosts)")
    rows = [{"host": p.host, "port": p.name, "state": p.state, "physical_state": p.physical_state,
             "rate_gbps": p.rate_gbps, "link_layer": p.link_layer, "source": p.source} for p in ports]
    res.link_state = rows  # for the reports
    return evidence
