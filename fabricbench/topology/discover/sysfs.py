"""Link state from /sys: InfiniBand/RoCE ports (rate, state, link layer, error counters), Ethernet speeds, PCIe
current vs maximum speed and width of NICs and NVIDIA GPUs, and whether GPUDirect RDMA (nvidia-peermem) is loaded.

`root` replaces `/` so that a copy of another machine's /sys (or a test tree) can be read.
"""

from __future__ import annotations

import re
from pathlib import Path

from fabricbench.topology.discover.facts import NicFact, Report
from fabricbench.topology.rates import pcie_generation_from_speed

IB_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*Gb/sec(?:\s*\((\d+)X\s*([A-Z0-9]+)\))?")
COUNTERS = ("symbol_error", "link_error_recovery", "link_downed", "port_rcv_errors", "port_xmit_discards",
            "local_link_integrity_errors", "excessive_buffer_overrun_errors")
FULL_WIDTH = 4  # IB ports are 4X unless split


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _pcie(dev: Path) -> dict:
    out = {}
    for key in ("current_link_speed", "max_link_speed", "current_link_width", "max_link_width"):
        value = _read(dev / key)
        if value is not None:
            out[key] = value
    gen_cur = pcie_generation_from_speed(out.get("current_link_speed", ""))
    gen_max = pcie_generation_from_speed(out.get("max_link_speed", ""))
    try:
        w_cur = int(out.get("current_link_width", ""))
        w_max = int(out.get("max_link_width", ""))
    except ValueError:
        w_cur = w_max = None
    if gen_cur or w_cur:
        out["generation"] = gen_cur
        out["width"] = w_cur
        out["degraded"] = bool((gen_cur and gen_max and gen_cur < gen_max) or (w_cur and w_max and w_cur < w_max))
    return out


def _numa(dev: Path) -> int | None:
    value = _read(dev / "numa_node")
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


def read(root: Path | str = "/") -> tuple[list[NicFact], Report]:
    root = Path(root)
    report = Report()
    nics: list[NicFact] = []
    ib_links: list[dict] = []
    rdma_netdevs: set[str] = set()
    ib_root = root / "sys/class/infiniband"
    if ib_root.is_dir():
        for dev in sorted(ib_root.iterdir()):
            device = dev / "device"
            pcie = _pcie(device)
            for netdev in (device / "net").glob("*") if (device / "net").is_dir() else []:
                rdma_netdevs.add(netdev.name)
            ports = sorted((dev / "ports").glob("*")) if (dev / "ports").is_dir() else []
            if not ports:
                report.unread.append(f"sysfs: {dev.name} has no ports/ directory")
            for port in ports:
                rate_text = _read(port / "rate")
                state = _read(port / "state") or ""
                layer_text = (_read(port / "link_layer") or "").lower()
                entry = {"device": dev.name, "port": port.name, "rate": rate_text, "state": state,
                         "phys_state": _read(port / "phys_state"), "link_layer": layer_text or None,
                         "pcie": pcie}
                counters = {}
                for name in COUNTERS:
                    value = _read(port / "counters" / name)
                    if value is not None and value.isascii() and value.isdigit():
                        counters[name] = int(value)
                if counters:
                    entry["counters"] = counters
                    entry["errors"] = {k: v for k, v in counters.items() if v}
                m = IB_RATE.match(rate_text or "")
                if not m:
                    report.unread.append(f"sysfs: {dev.name} port {port.name} rate {rate_text!r} unreadable")
                    ib_links.append(entry)
                    continue
                gbits = float(m.group(1))
                width = int(m.group(2)) if m.group(2) else None
                entry.update({"gbits": gbits, "width": width, "speed": m.group(3)})
                entry["degraded"] = bool(width and width < FULL_WIDTH)
                ib_links.append(entry)
                active = "ACTIVE" in state.upper()
                if not active:
                    report.unread.append(f"sysfs: {dev.name} port {port.name} is {state or 'in an unknown state'} "
                                         "(not used as a NIC)")
                    continue
                layer = "ib" if layer_text in ("infiniband", "") else "roce"
                nics.append(NicFact(name=dev.name if port.name == "1" else f"{dev.name}:{port.name}",
                                    rate=gbits / 8, link_layer=layer, numa=_numa(device),
                                    pcie_gen=pcie.get("generation"), pcie_width=pcie.get("width")))
        report.read.append(f"sysfs: {len(ib_links)} RDMA port(s) under /sys/class/infiniband")
    else:
        report.unread.append(f"sysfs: no {ib_root} (no RDMA devices or drivers)")
    eth: list[dict] = []
    net_root = root / "sys/class/net"
    if net_root.is_dir():
        for dev in sorted(net_root.iterdir()):
            if dev.name == "lo" or not (dev / "device").exists() or dev.name in rdma_netdevs:
                continue
            if _read(dev / "type") == "32":  # IPoIB: counted with its RDMA device
                continue
            speed = _read(dev / "speed")
            oper = _read(dev / "operstate")
            entry = {"device": dev.name, "speed_mbps": speed, "operstate": oper, "pcie": _pcie(dev / "device")}
            eth.append(entry)
            try:
                mbps = int(speed or "")
            except ValueError:
                mbps = -1
            if oper not in (None, "up", "unknown"):
                report.unread.append(f"sysfs: {dev.name} is {oper} (not used as a NIC)")
                continue
            if mbps <= 0:
                report.unread.append(f"sysfs: {dev.name} is up but reports no speed ({speed!r}: a virtual NIC?); "
                                     "not used (give --link-rate)")
                continue
            nics.append(NicFact(name=dev.name, rate=mbps / 8000, link_layer="ethernet", numa=_numa(dev / "device")))
        report.read.append(f"sysfs: {len(eth)} physical Ethernet interface(s)")
    else:
        report.unread.append(f"sysfs: no {net_root}")
    gpus: list[dict] = []
    pci_root = root / "sys/bus/pci/devices"
    if pci_root.is_dir():
        for dev in sorted(pci_root.iterdir()):
            if _read(dev / "vendor") == "0x10de" and (_read(dev / "class") or "").startswith("0x03"):
                gpus.append({"busid": dev.name, "numa": _numa(dev), "pcie": _pcie(dev)})
    peermem = (root / "sys/module/nvidia_peermem").exists()
    report.evidence = {
        "ib_ports": ib_links, "ethernet": eth, "gpu_pcie": gpus,
        "gpudirect_rdma": {"nvidia_peermem_loaded": peermem,
                           "note": "dma-buf GPUDirect needs no module; it cannot be seen in /sys"},
        "degraded": [f"{e['device']} port {e['port']}: {e['rate']}" for e in ib_links if e.get("degraded")]
                    + [f"{e['device']} port {e['port']}: errors {e['errors']}" for e in ib_links if e.get("errors")]
                    + [f"{x.get('device', x.get('busid'))}: PCIe {x['pcie'].get('current_link_speed')} "
                       f"x{x['pcie'].get('current_link_width')} of {x['pcie'].get('max_link_speed')} "
                       f"x{x['pcie'].get('max_link_width')}"
                       for x in ib_links + gpus if x.get("pcie", {}).get("degraded")],
    }
    return nics, report
