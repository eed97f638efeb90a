"""What discovery sources report, before it becomes a topology: plain containers the merger combines."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NicFact:
    name: str
    rate: float | None = None  # GB/s per direction
    link_layer: str | None = None  # ib, roce, ethernet
    numa: int | None = None
    gpus: list[int] = field(default_factory=list)
    pcie_gen: int | None = None
    pcie_width: int | None = None


@dataclass
class HostFacts:
    source: str
    gpus: int | None = None
    gpu_model: str | None = None
    gpu_numa: list[int | None] = field(default_factory=list)
    nvlink_generation: int | None = None
    nvlink_links_per_gpu: int | None = None
    nvswitch: bool | None = None
    nvlink_pairs: dict[tuple[int, int], int] = field(default_factory=dict)  # direct links between GPUs
    pcie_gen: int | None = None
    pcie_width: int | None = None
    nics: list[NicFact] = field(default_factory=list)
    pcie_switches: list[dict] = field(default_factory=list)  # {name, gpus: [...], nics: [...]}
    numa_nodes: int | None = None


@dataclass
class FabricFacts:
    source: str
    switches: list[dict] = field(default_factory=list)  # {name, switches: [...], nodes: [...], uplink_rate}
    blocks: dict[str, list[str]] = field(default_factory=dict)
    host_port_rate: float | None = None
    host_ports: int | None = None
    link_layer: str | None = None


@dataclass
class Report:
    """Everything discovery says to the user: what it read, what it could not, what it assumed."""

    read: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    assumed: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        return ([f"read: {x}" for x in self.read] + [f"could not read: {x}" for x in self.unread]
                + [f"assumed: {x}" for x in self.assumed])
