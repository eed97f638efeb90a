"""`fabricbench topo discover`: read what a machine or cluster shows and write a topology.

One module per source (nvidia_smi, nvml, sysfs, nccl_xml, slurm_topology, ibnetdiscover); this module merges
their facts, fills gaps only with stated assumptions, and validates the result against the schema.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import hostlist

from fabricbench.errors import UsageError
from fabricbench.topology.discover import ibnetdiscover as ibnet_mod
from fabricbench.topology.discover import link_state as link_mod
from fabricbench.topology.discover import nccl_xml as nccl_mod
from fabricbench.topology.discover import nvidia_smi as smi_mod
from fabricbench.topology.discover import nvml as nvml_mod
from fabricbench.topology.discover import slurm_topology as slurm_mod
from fabricbench.topology.discover import sysfs as sysfs_mod
from fabricbench.topology.discover.facts import FabricFacts, HostFacts, NicFact, Report
from fabricbench.topology.load import parse_topology
from fabricbench.topology.rates import format_rate, parse_rate
from fabricbench.topology.schema import Topology

NVLINK_RATE = {1: 20.0, 2: 25.0, 3: 25.0, 4: 25.0, 5: 50.0, 6: 100.0}  # GB/s per link per direction
LINKS_TO_GENERATION = {18: 4, 12: 3, 6: 2, 4: 1}
MAX_FILE = 64 * 1024 * 1024


def read_source(path: Path, option: str) -> str:
    from fabricbench import limits

    # regular files only (a FIFO or /dev/zero is refused at once), at most 64 MiB
    return limits.read_text(path, option, MAX_FILE, errors="replace")


def _run_nvidia_smi(report: Report) -> HostFacts | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        report.unread.append("nvidia-smi: not found on this machine")
        return None
    try:
        done = subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        report.unread.append(f"nvidia-smi topo -m: did not run ({err})")
        return None
    if done.returncode != 0:
        report.unread.append(f"nvidia-smi topo -m: exit {done.returncode}: {' '.join(done.stderr.split())[:120]}")
        return None
    try:
        facts, sub = smi_mod.parse(done.stdout, "nvidia-smi topo -m")
    except UsageError as err:
        report.unread.append(str(err))
        return None
    _absorb(report, sub)
    return facts


def _absorb(report: Report, sub: Report) -> None:
    report.read += sub.read
    report.unread += sub.unread
    report.assumed += sub.assumed
    report.evidence.update(sub.evidence)


def _pick(sources: list[HostFacts], attr: str):
    for facts in sources:
        value = getattr(facts, attr)
        if value not in (None, [], {}):
            return value, facts.source
    return None, None


def _nic_name(name: str) -> str:
    return name.replace(":", "-p")


def _node_type(hosts: list[HostFacts], sys_nics: list[NicFact], fabric: FabricFacts | None, link_rate: float | None,
               report: Report) -> dict:
    nt: dict = {"description": "discovered"}
    n, src = _pick(hosts, "gpus")
    n = n or 0
    counts = {f.source: f.gpus for f in hosts if f.gpus is not None}
    if len(set(counts.values())) > 1:
        report.unread.append(f"GPU counts differ between sources {counts}; using {n} from {src}")
    model, _ = _pick(hosts, "gpu_model")
    nt["gpus"] = {"count": n, "model": model or "unknown"}
    numa, _ = _pick([h for h in hosts if h.gpus == n], "gpu_numa")
    numa_nodes = 1
    if n and numa and len(numa) == n and all(x is not None for x in numa):
        nt["gpus"]["numa"] = list(numa)
        numa_nodes = max(numa) + 1
    elif n:
        report.unread.append("NUMA node of each GPU: not known (all taken as NUMA 0)")
    links, _ = _pick([h for h in hosts if h.gpus == n], "nvlink_links_per_gpu")
    if n and links:
        nvswitch = next((h.nvswitch for h in hosts if h.nvswitch is not None and h.gpus == n), False)
        gen, gen_src = _pick(hosts, "nvlink_generation")
        if gen is None:
            gen = LINKS_TO_GENERATION.get(links, 3)
            report.assumed.append(f"NVLink generation {gen} (from {links} links per GPU; no source names the GPU "
                                  "architecture: give --nccl-xml or run where NVML works)")
        nvl = {"generation": gen, "links_per_gpu": links, "link_rate": format_rate(NVLINK_RATE[gen]),
               "topology": "nvswitch" if nvswitch else "direct"}
        if not nvswitch:
            pairs, _ = _pick([h for h in hosts if h.gpus == n], "nvlink_pairs")
            if pairs:
                nvl["connections"] = [[a, b, c] for (a, b), c in sorted(pairs.items())]
            else:
                nvl = None
                report.unread.append("NVLink: link counts known but not which GPU pairs they join (left out)")
        if nvl:
            nt["nvlink"] = nvl
    if n:
        gen, _ = _pick(hosts, "pcie_gen")
        width, _ = _pick(hosts, "pcie_width")
        if gen is None or width is None:
            report.assumed.append(f"GPU PCIe generation {gen or 4}, width x{width or 16} (not in the sources read)")
        nt["pcie"] = {"generation": gen or 4, "width": width if width in (1, 2, 4, 8, 16, 32) else 16}
    # NICs: names and GPU affinity from host sources, rates and link layers from sysfs where names match
    base, _ = _pick(hosts, "nics")
    by_sys = {_nic_name(x.name): x for x in sys_nics}
    merged: list[NicFact] = []
    for nic in base or []:
        name = _nic_name(nic.name)
        extra = by_sys.get(name)
        merged.append(NicFact(name=name, rate=nic.rate or (extra.rate if extra else None),
                              link_layer=(extra.link_layer if extra and extra.link_layer else nic.link_layer),
                              numa=nic.numa if nic.numa is not None else (extra.numa if extra else None),
                              gpus=[g for g in nic.gpus if g < n], pcie_gen=nic.pcie_gen, pcie_width=nic.pcie_width))
    if not base:
        merged = [NicFact(name=_nic_name(x.name), rate=x.rate, link_layer=x.link_layer, numa=x.numa,
                          pcie_gen=x.pcie_gen, pcie_width=x.pcie_width) for x in sys_nics]
    if not merged and fabric is not None and fabric.host_ports:
        rate = fabric.host_port_rate or link_rate
        if rate:
            merged = [NicFact(name=f"port{i + 1}", rate=rate, link_layer=fabric.link_layer or "ib")
                      for i in range(fabric.host_ports)]
            report.assumed.append(f"{fabric.host_ports} NIC(s) per host at {format_rate(rate)}, as {fabric.source} "
                                  "shows the hosts' ports (no host-level source read)")
    nics = []
    dropped = []
    for nic in merged:
        rate = nic.rate
        if rate is None and link_rate is not None:
            rate = link_rate
            report.assumed.append(f"NIC {nic.name} at --link-rate {format_rate(link_rate)}")
        if rate is None and fabric is not None and fabric.host_port_rate:
            rate = fabric.host_port_rate
            report.assumed.append(f"NIC {nic.name} at {format_rate(rate)}, the fabric's common host link rate")
        if rate is None:
            dropped.append(nic.name)
            continue
        entry = {"name": nic.name, "rate": format_rate(rate), "link_layer": nic.link_layer or "ib", "gpus": nic.gpus}
        if nic.numa is not None:
            entry["numa"] = nic.numa
            numa_nodes = max(numa_nodes, nic.numa + 1)
        if nic.pcie_gen and nic.pcie_width in (1, 2, 4, 8, 16, 32):
            entry["pcie"] = {"generation": nic.pcie_gen, "width": nic.pcie_width}
        nics.append(entry)
    if dropped:
        report.unread.append(f"NIC speed unknown for {', '.join(dropped[:6])}{' ...' if len(dropped) > 6 else ''}: "
                             "left out (give --sysfs-root, --nccl-xml with <net speed>, or --link-rate)")
    nt["nics"] = nics
    kept = {x["name"] for x in nics}
    switches, _ = _pick([h for h in hosts if h.gpus == n], "pcie_switches")
    nt["pcie_switches"] = [{"name": s["name"], "gpus": s["gpus"],
                            "nics": [_nic_name(x) for x in s["nics"] if _nic_name(x) in kept]}
                           for s in switches or [] if all(g < n for g in s["gpus"])]
    nt["numa_nodes"] = numa_nodes
    if numa_nodes > 1:
        nt["cpu_interconnect"] = "64 GB/s"
        report.assumed.append("CPU interconnect 64 GB/s between NUMA nodes (no source gives it)")
    if not n:
        nt["host_memory"] = "10 GB/s"
        report.assumed.append("host memory 10 GB/s between CPU ranks (no GPUs found)")
    return nt


def discover(nvidia_smi_topo: Path | None = None, nccl_xml: Path | None = None, slurm_topology: Path | None = None,
             ibnetdiscover: Path | None = None, sysfs_root: Path | None = None, local: bool = True,
             name: str = "discovered", link_rate: str | None = None,
             link_state: Path | None = None) -> tuple[Topology, list[str]]:
    report = Report()
    rate = None
    if link_rate is not None:
        try:
            rate = parse_rate(link_rate)
        except ValueError as err:
            raise UsageError(f"--link-rate: {err}") from None
    hosts: list[HostFacts] = []
    sources: list[str] = []
    if nccl_xml is not None:
        facts, sub = nccl_mod.parse(read_source(nccl_xml, "--nccl-xml"), f"NCCL XML {nccl_xml.name}")
        hosts.append(facts)
        _absorb(report, sub)
        sources.append(f"NCCL topology XML {nccl_xml}")
    if local and sysfs_root is None and nvidia_smi_topo is None:
        nvml_facts, sub = nvml_mod.read()
        _absorb(report, sub)
        if nvml_facts is not None:
            hosts.append(nvml_facts)
            sources.append("NVML")
    if nvidia_smi_topo is not None:
        facts, sub = smi_mod.parse(read_source(nvidia_smi_topo, "--nvidia-smi-topo"),
                                   f"nvidia-smi topo {nvidia_smi_topo.name}")
        hosts.append(facts)
        _absorb(report, sub)
        sources.append(f"nvidia-smi topo -m output {nvidia_smi_topo}")
    elif local and sysfs_root is None:
        facts = _run_nvidia_smi(report)
        if facts is not None:
            hosts.append(facts)
            sources.append("nvidia-smi topo -m (live)")
    sys_nics: list[NicFact] = []
    if sysfs_root is not None or local:
        root = sysfs_root or Path("/")
        if sysfs_root is not None and not sysfs_root.is_dir():
            raise UsageError(f"--sysfs-root {sysfs_root}: not a directory")
        sys_nics, sub = sysfs_mod.read(root)
        _absorb(report, sub)
        sources.append(f"sysfs under {root}")
    if link_state is not None:  # saved ibstat/ibstatus/ibv_devinfo: NIC speeds and link layers, over sysfs's
        if not link_state.exists():
            raise UsageError(f"--link-state {link_state}: no such file or directory")
        link_nics, sub = link_mod.read(link_state)
        _absorb(report, sub)
        sources.append(f"link state {link_state}")
        known = {x.name for x in link_nics}
        sys_nics = link_nics + [x for x in sys_nics if x.name not in known]
    fabric: FabricFacts | None = None
    if ibnetdiscover is not None:
        fabric, sub = ibnet_mod.parse(read_source(ibnetdiscover, "--ibnetdiscover"), f"ibnetdiscover {ibnetdiscover.name}")
        _absorb(report, sub)
        sources.append(f"ibnetdiscover output {ibnetdiscover}")
    if slurm_topology is not None:
        slurm, sub = slurm_mod.parse(read_source(slurm_topology, "--slurm-topology"), f"Slurm {slurm_topology.name}")
        _absorb(report, sub)
        sources.append(f"Slurm topology.conf {slurm_topology}")
        if fabric is None:
            fabric = slurm
        else:
            report.evidence["slurm_blocks"] = slurm.blocks or None
            report.unread.append("both --ibnetdiscover and --slurm-topology: the switch tree is taken from "
                                 "ibnetdiscover (it has link rates)")
    if not sources:
        raise UsageError("nothing to read: give --nvidia-smi-topo, --nccl-xml, --slurm-topology, --ibnetdiscover, "
                         "--link-state or --sysfs-root (or drop --no-local)")
    type_name = "discovered-node"
    nt = _node_type(hosts, sys_nics, fabric, rate, report)
    fab: dict = {"node_type": type_name}
    if fabric is None:
        fab["kind"] = "none"
        fab["node_names"] = _hostname(local and not (nvidia_smi_topo or nccl_xml or sysfs_root or link_state))
    elif fabric.switches:
        fab["kind"] = "tree"
        fab["switches"] = [{"name": s["name"], "switches": s["switches"], "nodes": s["nodes"],
                            **({"uplink_rate": format_rate(s["uplink_rate"])} if s.get("uplink_rate") else {})}
                           for s in fabric.switches]
        if fabric.link_layer:
            fab["link_layer"] = fabric.link_layer
        if rate is not None and not nt["nics"]:
            fab["link_rate"] = format_rate(rate)
    else:
        members = [h for hs in fabric.blocks.values() for h in hs]
        fab["kind"] = "single_switch"
        fab["node_names"] = hostlist.collect_hostlist(members)
        fab["blocks"] = fabric.blocks
        report.assumed.append("topology/block has no switches: hosts placed on one switch; blocks kept as "
                              "fabric.blocks (set nvlink.domain_hosts if they are NVLink domains)")
        if rate is not None and not nt["nics"]:
            fab["link_rate"] = format_rate(rate)
    data = {"name": name, "description": "discovered by fabricbench topo discover from " + "; ".join(sources),
            "sources": sources, "node_types": {type_name: nt}, "fabric": fab,
            "evidence": report.evidence or None,
            "discovery": {"read": report.read, "could_not_read": report.unread, "assumed": report.assumed}}
    if data["evidence"] is None:
        del data["evidence"]
    topo = parse_topology(data, "discovered topology")
    return topo, report.lines()


def _hostname(live: bool) -> str:
    if live:
        name = socket.gethostname().split(".")[0]
        if name and all(c.isalnum() or c in "-_" for c in name):
            return name
    return "host1"
