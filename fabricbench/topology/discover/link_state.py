"""Discovery source: NIC speeds and link layers from saved `ibstat`, `ibstatus`, `ibv_devinfo -v` output or a
copied sysfs tree (fabricbench.linkstate reads them). Only ports that are up become NICs; the others are said."""

from __future__ import annotations

from pathlib import Path

from fabricbench.linkstate import read_ports
from fabricbench.topology.discover.facts import NicFact, Report


def read(path: Path) -> tuple[list[NicFact], Report]:
    report = Report()
    ports = read_ports(path)
    hosts = sorted({p.host for p in ports if p.host})
    if len(hosts) > 1:  # pdsh output of several hosts: describe the first; the node type is one host's
        report.assumed.append(f"link state lists {len(hosts)} hosts; the node type is taken from {hosts[0]}")
        ports = [p for p in ports if p.host == hosts[0]]
    nics: list[NicFact] = []
    for p in ports:
        name = p.ca if p.port == 1 else f"{p.ca}:{p.port}"
        if not p.active or not p.link_up:
            report.unread.append(f"link state: {p.name} is {p.state or '?'}"
                                 f"{' (' + p.physical_state + ')' if p.physical_state else ''} (not used as a NIC)")
            continue
        if p.rate_gbps is None:
            report.unread.append(f"link state: {p.name} reports no rate ({p.source} without -v?); give --link-rate")
            continue
        layer = "ib" if p.link_layer in ("InfiniBand", "") else "roce"
        nics.append(NicFact(name=name, rate=p.rate_gbps / 8, link_layer=layer))
    report.read.append(f"link state {Path(path).name}: {len(ports)} port(s) ({ports[0].source if ports else 'none'}), "
                       f"{len(nics)} up")
    report.evidence["link_state"] = [p.to_dict() for p in ports]
    return nics, report
