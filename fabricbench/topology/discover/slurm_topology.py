"""Slurm `topology.conf`: topology/tree (`SwitchName= Switches= Nodes= LinkSpeed=`) and topology/block
(`BlockName= Nodes=`, `BlockSizes=`). Hostlist ranges in both fields; comments and aligned spacing tolerated.

Slurm's LinkSpeed is a relative weight without units, so it is kept as evidence and never taken as a rate.
"""

from __future__ import annotations

import re

import hostlist

from fabricbench.errors import UsageError
from fabricbench.topology.discover.facts import FabricFacts, Report
from fabricbench.topology.schema import hostlist_size

_KEYS = {"switchname", "switches", "nodes", "linkspeed", "blockname", "blocksizes"}
_PAIR = re.compile(r"(\S+?)=(\S*)")


def _expand(value: str, what: str, lineno: int, source: str) -> list[str]:
    if hostlist_size(value) > 200_000:
        raise UsageError(f"{source}: line {lineno}: {what} {value[:40]!r} names more than 200000 hosts")
    try:
        names = hostlist.expand_hostlist(value)
    except hostlist.BadHostlist as err:
        raise UsageError(f"{source}: line {lineno}: {what} {value!r} is not a hostlist ({err})") from None
    if len(names) > 200_000:
        raise UsageError(f"{source}: line {lineno}: {what} expands to more than 200000 names")
    return names


def parse(text: str, source: str = "topology.conf") -> tuple[FabricFacts, Report]:
    report = Report()
    facts = FabricFacts(source=source)
    speeds: dict[str, str] = {}
    seen: set[str] = set()
    for lineno, raw in enumerate(text.replace("\r", "").split("\n"), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pairs = _PAIR.findall(line)
        leftover = _PAIR.sub("", line).strip()
        if not pairs or leftover:
            report.unread.append(f"{source}: line {lineno} is not Key=Value pairs: {raw.strip()[:60]!r}")
            continue
        fields = {}
        for key, value in pairs:
            if key.lower() not in _KEYS:
                report.unread.append(f"{source}: line {lineno}: unknown key {key!r} (ignored)")
                continue
            fields[key.lower()] = value
        if "switchname" in fields:
            name = fields["switchname"]
            if not name:
                raise UsageError(f"{source}: line {lineno}: SwitchName is empty")
            if name in seen:
                raise UsageError(f"{source}: line {lineno}: switch {name!r} is defined twice")
            seen.add(name)
            switch = {"name": name, "switches": [], "nodes": []}
            if fields.get("switches"):
                switch["switches"] = _expand(fields["switches"], "Switches", lineno, source)
            if fields.get("nodes"):
                switch["nodes"] = _expand(fields["nodes"], "Nodes", lineno, source)
            if not switch["switches"] and not switch["nodes"]:
                report.unread.append(f"{source}: line {lineno}: switch {name!r} lists neither Switches nor Nodes")
            if "linkspeed" in fields:
                speeds[name] = fields["linkspeed"]
            facts.switches.append(switch)
        elif "blockname" in fields:
            name = fields["blockname"]
            if name in facts.blocks:
                raise UsageError(f"{source}: line {lineno}: block {name!r} is defined twice")
            facts.blocks[name] = _expand(fields.get("nodes", ""), "Nodes", lineno, source) if fields.get("nodes") else []
        elif "blocksizes" in fields:
            report.read.append(f"{source}: BlockSizes={fields['blocksizes']}")
        else:
            report.unread.append(f"{source}: line {lineno}: neither SwitchName nor BlockName")
    if not facts.switches and not facts.blocks:
        raise UsageError(f"{source}: no SwitchName= or BlockName= line: not a Slurm topology.conf")
    if facts.switches and facts.blocks:
        raise UsageError(f"{source}: mixes SwitchName= (topology/tree) and BlockName= (topology/block) lines")
    if facts.switches:
        names = {s["name"] for s in facts.switches}
        for s in facts.switches:
            missing = [c for c in s["switches"] if c not in names]
            if missing:
                raise UsageError(f"{source}: switch {s['name']!r} lists {missing[0]!r}, which no SwitchName= defines")
        hosts = {h for s in facts.switches for h in s["nodes"]}
        report.read.append(f"{source}: topology/tree, {len(facts.switches)} switches, {len(hosts)} nodes")
        if speeds:
            report.evidence["slurm_linkspeed"] = speeds
            report.unread.append(f"{source}: LinkSpeed is a relative weight in Slurm, not a rate (kept as evidence)")
    else:
        hosts = {h for members in facts.blocks.values() for h in members}
        report.read.append(f"{source}: topology/block, {len(facts.blocks)} blocks, {len(hosts)} nodes")
        report.unread.append(f"{source}: topology/block names blocks (often NVLink domains or racks), not switches")
    return facts, report
