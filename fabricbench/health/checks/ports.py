"""IB/RoCE port state, physical state, rate and link layer against the topology's NICs.

Ports come from fabricbench.linkstate (`read_ports`: sysfs, saved ibstat/ibstatus/ibv_devinfo) when this build
has it, else from sysfs through fabricbench.gpu.sysfs; this module parses nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fabricbench.health.checks import CheckResult, Finding, Sources, register, worst

_LAYER = {"ib": "infiniband", "roce": "ethernet", "ethernet": "ethernet"}


@dataclass
class PortView:
    ca: str
    port: int
    state: str
    physical_state: str
    rate_gbps: float | None
    link_layer: str


def read_ports(src: Sources) -> tuple[list[PortView] | None, str]:
    try:
        from fabricbench import linkstate
    except ImportError:
        linkstate = None
    if linkstate is not None:
        from fabricbench.errors import UsageError

        where = src.ib_ports if src.ib_ports is not None else src.sysfs_root
        try:
            ports = linkstate.read_ports(where)
        except UsageError as err:
            return None, str(err)
        return [PortView(p.ca, int(p.port), p.state or "", p.physical_state or "", p.rate_gbps, p.link_layer or "")
                for p in ports], f"{where} ({ports[0].source if ports else 'no ports'})"
    if src.ib_ports is not None:
        return None, (f"reading saved port listings ({src.ib_ports}) needs fabricbench.linkstate, not in this "
                      "build; give --sysfs-root instead")
    from fabricbench.gpu.sysfs import discover_ports

    base = Path(src.sysfs_root) / "class" / "infiniband"
    if not base.is_dir():
        return None, f"no RDMA devices: {base} does not exist"
    return [PortView(p.device, p.port, p.state, p.phys_state, p.rate_gbps, p.link_layer)
            for p in discover_ports(src.sysfs_root)], str(base)


@register("ports", "IB/RoCE port state, physical state, rate and link layer (sysfs or saved ibstat) vs topology")
def check(src: Sources) -> CheckResult:
    res = CheckResult("ports", "unknown", "")
    nt = src.node_type
    want = {n.name: n for n in nt.nics} if nt is not None else {}
    res.compared_with = (f"topology: {', '.join(f'{n.name} {n.rate * 8:g} Gb/s {n.link_layer}' for n in want.values())}"
                         if want else "nothing but the port's own state (no --topology NICs)")
    ports, how = read_ports(src)
    if ports is None:
        if nt is not None and not want:
            res.status, res.summary = "pass", "the topology's node type has no NICs; none found to check"
            return res
        res.not_checked.append(f"IB/RoCE ports: {how}")
        res.summary = "nothing could be checked: " + how
        return res
    seen = set()
    for p in ports:
        name = f"{p.ca}:{p.port}"
        seen.add(p.ca)
        spec = want.get(p.ca)
        problems = []
        unreported = [what for what, v in (("state", p.state), ("physical state", p.physical_state),
                                           ("link layer", p.link_layer)) if not v]
        if unreported:  # e.g. ibv_devinfo without -v has no physical state
            res.not_checked.append(f"{name}: {', '.join(unreported)} not in {how}")
        if p.state and p.state.upper() != "ACTIVE":
            problems.append(f"state {p.state}")
        if p.physical_state and p.physical_state.replace(" ", "").lower() != "linkup":
            problems.append(f"physical state {p.physical_state}")
        layer = p.link_layer.lower()
        if spec is not None:
            want_gbps = spec.rate * 8  # topology rate is GB/s; ports report Gb/s
            if p.rate_gbps is None or p.rate_gbps < 0.99 * want_gbps:
                problems.append(f"rate {p.rate_gbps:g} Gb/s < {want_gbps:g} Gb/s" if p.rate_gbps is not None
                                else "rate unreadable")
            want_layer = _LAYER.get(spec.link_layer)
            if want_layer and layer and layer != want_layer:
                problems.append(f"link layer {p.link_layer}, expected {want_layer}")
        detail = f"{p.state}/{p.physical_state}, {p.rate_gbps:g} Gb/s, {p.link_layer}" if p.rate_gbps is not None \
            else f"{p.state}/{p.physical_state}, {p.link_layer}"
        status = "fail" if problems else ("pass" if spec is not None or not want else "warn")
        if not problems and want and spec is None:
            detail += " (not in the topology)"
        res.findings.append(Finding(name, "port", status, "; ".join(problems) if problems else detail,
                                    "rate_bytes_per_second", p.rate_gbps * 1e9 / 8 if p.rate_gbps else None,
                                    spec.rate * 1e9 if spec is not None else None))
    for missing in sorted(set(want) - seen):
        res.findings.append(Finding(f"{missing}:{want[missing].port}", "port", "fail",
                                    "in the topology but not found on this node"))
    res.status = worst(f.status for f in res.findings)
    if not want and res.status == "pass":
        res.status = "unknown" if not res.findings else "pass"
    bad = [f"{f.component}: {f.detail}" for f in res.findings if f.status == "fail"]
    res.summary = "; ".join(bad[:6]) if bad else (f"{len(res.findings)} port(s) ACTIVE/LinkUp" if res.findings
                                                   else f"no ports found ({how})")
    if not res.findings:
        res.status = "pass" if nt is not None and not want else "unknown"
    return res
