"""NCCL topology XML (`NCCL_TOPO_DUMP_FILE` dumps and hand-written `NCCL_TOPO_FILE`s).

`<system>` › `<cpu numaid>` › `<pci busid class link_speed link_width>` (bridges 0x0604 nest) › `<gpu dev sm>` ›
`<nvlink target count tclass>`, and `<nic>` › `<net name speed(Mb/s) port gdr>`. Hand-written files may give
GPUs and NICs as bare `<pci>` leaves (class 0x03.. / 0x02..): read, with what they lack named.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fabricbench.errors import UsageError
from fabricbench.topology.discover.facts import HostFacts, NicFact, Report
from fabricbench.topology.rates import pcie_generation_from_speed

SM_TO_NVLINK = {60: 1, 70: 2, 75: 2, 80: 3, 86: 3, 89: 4, 90: 4, 100: 5, 103: 5, 120: 5}
NVSWITCH_CLASS = "0x068000"


def _int(value: str | None, base: int = 10) -> int | None:
    try:
        return int(value, base) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def parse(text: str, source: str = "NCCL topology XML") -> tuple[HostFacts, Report]:
    report = Report()
    if len(text) > 50_000_000:
        raise UsageError(f"{source}: larger than 50 MB; not an NCCL topology dump")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise UsageError(f"{source}: not well-formed XML ({err}); truncated or not an NCCL topology file") from None
    if root.tag != "system":
        raise UsageError(f"{source}: the root element is <{root.tag}>, an NCCL topology has <system>")
    facts = HostFacts(source=source)
    gpus: list[dict] = []
    nics: list[NicFact] = []
    numa_ids: list[int] = []

    def walk(elem, numa: int | None, switch: str | None, depth: int) -> None:
        if depth > 64:
            raise UsageError(f"{source}: nesting deeper than 64 levels")
        for child in elem:
            if child.tag == "cpu":
                numa_id = _int(child.get("numaid"))
                if numa_id is None:
                    report.unread.append(f"{source}: a <cpu> without numaid (taken as NUMA 0)")
                    numa_id = 0
                numa_ids.append(numa_id)
                walk(child, numa_id, None, depth + 1)
            elif child.tag == "pci":
                cls = (child.get("class") or "").lower()
                busid = child.get("busid") or f"pci{len(gpus) + len(nics)}"
                gen = pcie_generation_from_speed(child.get("link_speed") or "")
                width = _int(child.get("link_width"))
                if cls.startswith("0x0604"):
                    walk(child, numa, busid, depth + 1)
                elif cls.startswith("0x03"):
                    gpu_el = child.find("gpu")
                    info = {"busid": busid, "numa": numa, "switch": switch, "gen": gen, "width": width, "sm": None,
                            "dev": None, "nvlinks": []}
                    if gpu_el is not None:
                        info["sm"] = _int(gpu_el.get("sm"))
                        info["dev"] = _int(gpu_el.get("dev"))
                        for link in gpu_el.findall("nvlink"):
                            info["nvlinks"].append((link.get("target"), _int(link.get("count")) or 0,
                                                    (link.get("tclass") or "").lower()))
                    gpus.append(info)
                elif cls.startswith("0x02"):
                    nets = child.findall("./nic/net")
                    layer = "ib" if cls.startswith("0x0207") else None
                    if not nets:
                        nics.append(NicFact(name=f"nic-{busid}", numa=numa, link_layer=layer, pcie_gen=gen,
                                            pcie_width=width or None))
                        nics[-1].switch = switch  # type: ignore[attr-defined]
                    for net in nets:
                        speed = _int(net.get("speed"))
                        name = net.get("name") or f"nic-{busid}"
                        if layer is None:
                            layer = "ethernet" if name.startswith(("eth", "en")) and net.get("gdr") == "0" else (
                                "ethernet" if (child.get("vendor") or "").lower() == "0x1d0f" else "roce")
                        nic = NicFact(name=name, rate=speed / 8000 if speed and speed > 0 else None, numa=numa,
                                      link_layer=layer, pcie_gen=gen, pcie_width=width or None)
                        nic.switch = switch  # type: ignore[attr-defined]
                        nics.append(nic)
                else:
                    walk(child, numa, switch, depth + 1)
            elif child.tag == "nic":  # NICs directly under a cpu
                for net in child.findall("net"):
                    speed = _int(net.get("speed"))
                    nic = NicFact(name=net.get("name") or "nic", rate=speed / 8000 if speed and speed > 0 else None,
                                  numa=numa, link_layer="roce")
                    nic.switch = None  # type: ignore[attr-defined]
                    nics.append(nic)

    walk(root, None, None, 0)
    if not gpus and not nics:
        bare = sum(1 for p in root.iter("pci") if not p.get("class"))
        hint = (f"; its {bare} <pci> entries carry no class (a file NCCL completes from the live machine)"
                if bare else "")
        raise UsageError(f"{source}: <system> holds no GPU and no NIC{hint}")
    gpus.sort(key=lambda g: (g["dev"] if g["dev"] is not None else 1 << 20, g["busid"]))
    facts.gpus = len(gpus)
    index_of = {g["busid"].lower(): i for i, g in enumerate(gpus)}
    facts.gpu_numa = [g["numa"] for g in gpus]
    if numa_ids:
        facts.numa_nodes = max(numa_ids) + 1
    sms = {g["sm"] for g in gpus if g["sm"]}
    if sms:
        sm = max(sms)
        facts.nvlink_generation = SM_TO_NVLINK.get(sm)
        facts.gpu_model = f"sm{sm}"
        if facts.nvlink_generation is None:
            report.unread.append(f"{source}: unknown GPU architecture sm={sm}")
    elif gpus:
        report.unread.append(f"{source}: GPUs without <gpu sm=...> (hand-written file): no architecture, no NVLink")
    per_gpu = []
    for i, g in enumerate(gpus):
        total = 0
        for target, count, tclass in g["nvlinks"]:
            total += count
            if tclass.startswith("0x0680"):
                facts.nvswitch = True
            elif target and target.lower() in index_of:
                j = index_of[target.lower()]
                if j == i:
                    report.unread.append(f"{source}: GPU {i} has an <nvlink> pointing at itself (ignored)")
                    total -= count
                    continue
                key = (min(i, j), max(i, j))
                facts.nvlink_pairs[key] = max(facts.nvlink_pairs.get(key, 0), count)
        per_gpu.append(total)
    if any(per_gpu):
        facts.nvlink_links_per_gpu = max(per_gpu)
        if facts.nvswitch:
            facts.nvlink_pairs = {}
        else:
            facts.nvswitch = False
    if gpus and sms and not any(per_gpu):
        report.unread.append(f"{source}: no <nvlink> elements: NVLink is not described in this file")
    gens = {g["gen"] for g in gpus if g["gen"]}
    widths = {g["width"] for g in gpus if g["width"]}
    if gens:
        facts.pcie_gen = max(gens)
    if widths:
        facts.pcie_width = max(widths)
    elif gpus:
        report.unread.append(f"{source}: GPU PCIe width is 0 or absent (typical of VMs)")
    switches: dict[str, dict] = {}
    for i, g in enumerate(gpus):
        if g["switch"]:
            switches.setdefault(g["switch"], {"gpus": [], "nics": []})["gpus"].append(i)
    for nic in nics:
        sw = getattr(nic, "switch", None)
        if sw:
            switches.setdefault(sw, {"gpus": [], "nics": []})["nics"].append(nic.name)
            nic.gpus = list(switches[sw]["gpus"])
    for k, (busid, members) in enumerate(switches.items()):
        if members["gpus"]:
            facts.pcie_switches.append({"name": f"pcisw{k}", "gpus": members["gpus"], "nics": members["nics"],
                                        "busid": busid})
    for nic in nics:  # a NIC under a switch without GPUs serves none in particular
        if nic.rate is None:
            report.unread.append(f"{source}: NIC {nic.name} has no <net speed=...>")
    facts.nics = nics
    report.read.append(f"{source}: {len(gpus)} GPUs"
                       + (f" ({facts.gpu_model}, NVLink {facts.nvlink_links_per_gpu} links per GPU"
                          f"{' via NVSwitch' if facts.nvswitch else ''})" if facts.nvlink_links_per_gpu else "")
                       + f", {len(nics)} NICs, {len(facts.pcie_switches)} PCIe switches with GPUs")
    return facts, report
