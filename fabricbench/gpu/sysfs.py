"""RDMA NICs and their PCIe neighbourhood, read from sysfs (`/sys/class/infiniband`, `/sys/bus/pci/devices`).

`root` is the sysfs mount (`/sys`); tests give a fake tree (`--sysfs-root`). Symbolic links are resolved
inside that root, as the kernel lays them out: `class/infiniband/<dev>/device` and `bus/pci/devices/<bdf>`
point into `devices/pci<domain>:<bus>/.../<bdf>`, so the chain of PCIe bridges above a device is its path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fabricbench.errors import UsageError


@dataclass(frozen=True)
class IbPort:
    device: str  # mlx5_1
    port: int  # 1
    state: str  # ACTIVE, DOWN, INIT, ...
    phys_state: str  # LinkUp, Disabled, Polling, ...
    rate: str  # '400 Gb/sec (4X NDR)'
    link_layer: str  # InfiniBand | Ethernet
    pci_path: tuple[str, ...] = field(default=())  # ('pci0000:00', '0000:00:01.0', ..., '0000:03:00.0')
    numa_node: int | None = None

    @property
    def name(self) -> str:
        return f"{self.device}:{self.port}"

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"

    @property
    def rate_gbps(self) -> float | None:
        """Signalling rate in Gb/s from sysfs 'rate' ('400 Gb/sec (4X NDR)' -> 400.0)."""
        head = self.rate.split(" ")[0] if self.rate else ""
        try:
            return float(head)
        except ValueError:
            return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _state(text: str) -> str:
    """'4: ACTIVE' -> 'ACTIVE'."""
    return text.split(":", 1)[1].strip() if ":" in text else text.strip()


def pci_path(root: str | os.PathLike, link: str | os.PathLike) -> tuple[str, ...]:
    """The PCIe chain of a device from its sysfs link: ('pci0000:00', '0000:00:01.0', ..., the device)."""
    root = Path(root).resolve()
    try:
        real = Path(os.path.realpath(link))
        rel = real.relative_to(root / "devices")
    except (OSError, ValueError):
        return ()
    parts = [p for p in rel.parts if p.startswith("pci") or _is_bdf(p)]
    return tuple(parts)


def _is_bdf(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 3 and "." in parts[2]


def _numa(path: Path) -> int | None:
    text = _read(path / "numa_node")
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def discover_ports(root: str | os.PathLike = "/sys") -> list[IbPort]:
    """Every port of every RDMA device, sorted by (device, port)."""
    base = Path(root) / "class" / "infiniband"
    if not base.is_dir():
        return []
    out = []
    for dev_dir in sorted(base.iterdir(), key=lambda p: p.name):
        ports_dir = dev_dir / "ports"
        if not ports_dir.is_dir():
            continue
        device_link = dev_dir / "device"
        path = pci_path(root, device_link) if device_link.exists() else ()
        numa = _numa(device_link) if device_link.exists() else None
        for port_dir in sorted(ports_dir.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0):
            if not port_dir.name.isdigit():
                continue
            out.append(IbPort(dev_dir.name, int(port_dir.name), _state(_read(port_dir / "state")),
                              _state(_read(port_dir / "phys_state")), _read(port_dir / "rate"),
                              _read(port_dir / "link_layer") or "InfiniBand", path, numa))
    return out


def select_ports(ports: list[IbPort], wanted: str | None) -> list[IbPort]:
    """--hca 'mlx5_0,mlx5_1:1' -> those ports (a device without ':port' means all its ports). Exact names:
    mlx5_1 never selects mlx5_10. Unknown names are refused with the list of what exists."""
    if not wanted:
        return list(ports)
    chosen: list[IbPort] = []
    known = {p.device for p in ports}
    for item in (w.strip() for w in wanted.split(",")):
        if not item:
            continue
        dev, _, port = item.partition(":")
        if dev not in known:
            have = ", ".join(sorted(known)) or "none (no /sys/class/infiniband devices)"
            raise UsageError(f"--hca: no RDMA device named '{dev}' on this host; it has: {have}")
        matched = [p for p in ports if p.device == dev and (not port or str(p.port) == port)]
        if not matched:
            have = ", ".join(p.name for p in ports if p.device == dev)
            raise UsageError(f"--hca: {dev} has no port {port}; its ports: {have}")
        chosen += [p for p in matched if p not in chosen]
    return chosen


def nccl_ib_hca(port: IbPort) -> str:
    """NCCL_IB_HCA selecting exactly this one port: '=mlx5_1:1' (a bare 'mlx5_1' is a prefix match that also
    selects mlx5_10, mlx5_11, ...)."""
    return f"={port.device}:{port.port}"


# -- GPUs near a NIC ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Affinity:
    gpu: int
    relation: str  # PIX (same PCIe switch), PXB (switches, same root port), PHB (same host bridge), SYS, unknown
    common: int  # length of the shared PCIe chain (deeper = closer)
    same_numa: bool

    @property
    def shares_switch(self) -> bool:
        return self.relation in ("PIX", "PXB")


def gpu_pci_path(root: str | os.PathLike, bus_id: str) -> tuple[str, ...]:
    link = Path(root) / "bus" / "pci" / "devices" / bus_id.lower()
    return pci_path(root, link) if link.exists() else ()


def relation(nic_path: tuple[str, ...], gpu_path: tuple[str, ...]) -> tuple[str, int]:
    """nvidia-smi topo's words for the path between two PCIe devices, from their chains."""
    if not nic_path or not gpu_path:
        return "unknown", 0
    a, b = nic_path[:-1], gpu_path[:-1]  # the bridges above each device
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    if common == 0:
        return "SYS", 0
    if common == 1:
        return "PHB", 1  # only the host bridge (root complex) in common
    if len(a) - common <= 1 and len(b) - common <= 1:
        return "PIX", common
    return "PXB", common


def nearest_gpus(root: str | os.PathLike, port: IbPort, gpu_bus_ids: dict[int, str]) -> list[Affinity]:
    """GPUs ordered from nearest to farthest from the NIC (shared PCIe chain, then NUMA node, then index)."""
    out = []
    for gpu, bus in sorted(gpu_bus_ids.items()):
        path = gpu_pci_path(root, bus)
        rel, common = relation(port.pci_path, path)
        numa = _numa(Path(root) / "bus" / "pci" / "devices" / bus.lower())
        out.append(Affinity(gpu, rel, common, numa is not None and numa == port.numa_node))
    out.sort(key=lambda a: (-a.common, not a.same_numa, a.gpu))
    return out


def parse_gpu_map(text: str | None, ngpus: int) -> dict[str, int]:
    """--gpu-map 'mlx5_0=0,mlx5_1=3' -> {'mlx5_0': 0, 'mlx5_1': 3}."""
    out: dict[str, int] = {}
    if not text:
        return out
    for item in text.split(","):
        if not item.strip():
            continue
        nic, sep, gpu = item.partition("=")
        try:
            index = int(gpu)
        except ValueError:
            index = -1
        if not sep or index < 0:
            raise UsageError(f"--gpu-map '{item}': write NIC=GPU, e.g. mlx5_0=0,mlx5_1=1")
        if index >= ngpus:
            raise UsageError(f"--gpu-map '{item}': GPU {index} does not exist ({ngpus} GPU(s))")
        out[nic.strip()] = index
    return out
