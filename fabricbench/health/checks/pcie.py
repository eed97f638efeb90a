"""PCIe link speed and width of every GPU and RDMA NIC against what the link can do (sysfs
current_link_speed / max_link_speed, current_link_width / max_link_width).

A narrower link than the device's maximum is a downtrained link (a bad riser, slot or cable) and fails. A
slower speed fails for NICs; NVIDIA GPUs lower their link speed while idle to save power (the speed comes back
under load), so for a GPU a lower speed alone is a warning, the width is what shows a downtrained GPU link.
"""

from __future__ import annotations

from pathlib import Path

from fabricbench.health.checks import CheckResult, Finding, Sources, register, worst
from fabricbench.health.checks.gpus import pci_gpus
from fabricbench.topology.rates import pcie_generation_from_speed


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _nic_devices(sysfs_root: Path) -> dict[str, Path]:
    """RDMA device name -> its PCI device directory (class/infiniband/<dev>/device)."""
    base = Path(sysfs_root) / "class" / "infiniband"
    out = {}
    if base.is_dir():
        for dev in sorted(base.iterdir()):
            link = dev / "device"
            if link.exists():
                out[dev.name] = link.resolve()
    return out


def judge(name: str, kind: str, dev: Path) -> Finding:
    cur_s, max_s = _read(dev / "current_link_speed"), _read(dev / "max_link_speed")
    cur_w, max_w = _read(dev / "current_link_width"), _read(dev / "max_link_width")
    if not (cur_s and max_s and cur_w and max_w):
        return Finding(name, "pcie", "unknown", f"{dev.name}: link speed/width files not readable")
    gen_c, gen_m = pcie_generation_from_speed(cur_s), pcie_generation_from_speed(max_s)
    try:
        w_c, w_m = int(cur_w), int(max_w)
    except ValueError:
        return Finding(name, "pcie", "unknown", f"{dev.name}: width {cur_w!r}/{max_w!r} not a number")
    text = f"{dev.name}: {cur_s} x{w_c} (capable of {max_s} x{w_m})"
    if w_c < w_m:
        return Finding(name, "pcie", "fail", text + ": fewer lanes than the link has", "link_width_lanes", w_c, w_m)
    if gen_c and gen_m and gen_c < gen_m:
        if kind == "gpu":
            return Finding(name, "pcie", "warn", text + ": lower speed (normal for an idle GPU; judge under load)",
                           "link_generation", gen_c, gen_m)
        return Finding(name, "pcie", "fail", text + ": lower speed than the link is capable of", "link_generation",
                       gen_c, gen_m)
    return Finding(name, "pcie", "pass", text, "link_width_lanes", w_c, w_m)


@register("pcie", "PCIe link speed and width of every GPU and RDMA NIC against its capability (sysfs)")
def check(src: Sources) -> CheckResult:
    res = CheckResult("pcie", "unknown", "", compared_with="each device's own max_link_speed / max_link_width")
    root = Path(src.sysfs_root)
    gpus = pci_gpus(root)
    if gpus is None:
        res.not_checked.append(f"GPU PCIe links: no PCI device tree at {root / 'bus/pci/devices'}")
    else:
        for i, bdf in enumerate(gpus):
            res.findings.append(judge(f"gpu{i}/pcie", "gpu", root / "bus" / "pci" / "devices" / bdf))
        if not gpus:
            res.not_checked.append("GPU PCIe links: no NVIDIA GPU on the PCI bus")
    nics = _nic_devices(root)
    if not nics:
        res.not_checked.append(f"NIC PCIe links: no RDMA device under {root / 'class/infiniband'}")
    for name, dev in nics.items():
        res.findings.append(judge(f"{name}/pcie", "nic", dev))
    res.status = worst(f.status for f in res.findings)
    bad = [f.component + " " + f.detail for f in res.findings if f.status in ("fail", "warn")]
    res.summary = "; ".join(bad[:6]) if bad else (f"{len(res.findings)} link(s) at full speed and width" if
                                                   res.findings else "nothing could be checked")
    return res
