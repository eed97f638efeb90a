"""The topology file format (pydantic v2). Unknown keys are refused; every rate carries a unit.

A topology has `node_types` (what is inside a host) and one `fabric` (how hosts are joined). See docs/topology.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import networkx as nx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from fabricbench.topology.rates import format_rate, parse_rate

MAX_HOSTS = 20000


def hostlist_size(text: str) -> int:
    """An upper bound on how many names a Slurm hostlist expands to, computed without expanding it."""
    import re

    total = 0
    for item in re.split(r",(?![^\[]*\])", text):
        count = 1
        for group in re.findall(r"\[([^\]]*)\]", item):
            size = 0
            for part in group.split(","):
                bounds = part.split("-")
                if len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
                    size += max(0, int(bounds[1]) - int(bounds[0])) + 1
                else:
                    size += 1
            count *= max(size, 1)
        total += count
    return total


Rate = Annotated[float, BeforeValidator(parse_rate), PlainSerializer(format_rate, return_type=str)]  # GB/s per direction, parsed from '400 Gb/s'
LinkLayer = Literal["ib", "roce", "ethernet", "emulated"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class PCIe(Model):
    generation: int = Field(ge=1, le=6)
    width: Literal[1, 2, 4, 8, 16, 32] = 16


class GPUs(Model):
    count: int = Field(ge=0, le=1024)
    model: str = "unknown"
    numa: list[int] | None = None  # NUMA node of each GPU, in GPU order


class NVLink(Model):
    generation: int = Field(ge=1, le=6)
    links_per_gpu: int = Field(ge=1, le=64)
    link_rate: Rate  # per link, per direction
    topology: Literal["nvswitch", "direct"]
    domain_hosts: int = Field(default=1, ge=1, le=1024)  # hosts whose GPUs share one NVLink (NVSwitch) domain
    nvls: bool | None = None  # NVLink SHARP in the switches; default: NVSwitch of generation 4 or later
    connections: list[tuple[int, int, int]] | None = None  # direct only: [gpu_a, gpu_b, links]


class NIC(Model):
    name: str = Field(min_length=1)
    rate: Rate
    link_layer: LinkLayer = "ib"
    gpus: list[int] = []  # the GPUs this NIC serves (its rail peers inside the host)
    numa: int | None = None
    pcie: PCIe | None = None
    port: int = Field(default=1, ge=1, le=255)


class PCIeSwitch(Model):
    name: str = Field(min_length=1)
    gpus: list[int] = []
    nics: list[str] = []
    uplink: PCIe | None = None  # default: the GPUs' PCIe link


class NodeType(Model):
    description: str = ""
    gpus: GPUs
    nvlink: NVLink | None = None
    pcie: PCIe | None = None  # each GPU's PCIe link
    numa_nodes: int = Field(default=1, ge=1, le=64)
    cpu_interconnect: Rate | None = None  # between NUMA nodes (UPI/xGMI), needed when numa_nodes > 1
    host_memory: Rate | None = None  # between CPU ranks of one host (gloo/shared memory)
    ranks_per_node: int | None = Field(default=None, ge=1, le=1024)  # default: one per GPU, or 1 without GPUs
    nics: list[NIC] = []
    pcie_switches: list[PCIeSwitch] = []

    @model_validator(mode="after")
    def _check(self) -> "NodeType":
        n = self.gpus.count
        if self.gpus.numa is not None:
            if len(self.gpus.numa) != n:
                raise ValueError(f"gpus.numa lists {len(self.gpus.numa)} NUMA nodes for {n} GPUs; give one per GPU")
            bad = [x for x in self.gpus.numa if not 0 <= x < self.numa_nodes]
            if bad:
                raise ValueError(f"gpus.numa names NUMA node {bad[0]}; allowed 0..{self.numa_nodes - 1} (numa_nodes)")
        if self.nvlink is not None:
            if n < 2 and self.nvlink.domain_hosts * n < 2:
                raise ValueError("nvlink is given but the NVLink domain has fewer than 2 GPUs")
            if self.nvlink.topology == "direct":
                if self.nvlink.domain_hosts != 1:
                    raise ValueError("nvlink.domain_hosts > 1 needs topology: nvswitch")
                if not self.nvlink.connections:
                    raise ValueError("nvlink.topology direct needs nvlink.connections: [[gpu_a, gpu_b, links], ...]")
                used = [0] * n
                for a, b, links in self.nvlink.connections:
                    if not (0 <= a < n and 0 <= b < n) or a == b or links < 1:
                        raise ValueError(f"nvlink.connections [{a}, {b}, {links}]: GPUs must be two different "
                                         f"indexes in 0..{n - 1} and links >= 1")
                    used[a] += links
                    used[b] += links
                over = [i for i, u in enumerate(used) if u > self.nvlink.links_per_gpu]
                if over:
                    raise ValueError(f"nvlink.connections give GPU {over[0]} {used[over[0]]} links, more than "
                                     f"links_per_gpu={self.nvlink.links_per_gpu}")
            elif self.nvlink.connections:
                raise ValueError("nvlink.connections is only for topology: direct")
        names = [nic.name for nic in self.nics]
        dup = {x for x in names if names.count(x) > 1}
        if dup:
            raise ValueError(f"NIC name {sorted(dup)[0]!r} is used twice; NIC names must be unique")
        for nic in self.nics:
            bad = [g for g in nic.gpus if not 0 <= g < n]
            if bad:
                raise ValueError(f"NIC {nic.name!r} serves GPU {bad[0]}, which does not exist (GPUs 0..{n - 1})")
            if nic.numa is not None and not 0 <= nic.numa < self.numa_nodes:
                raise ValueError(f"NIC {nic.name!r} numa {nic.numa}: allowed 0..{self.numa_nodes - 1}")
        seen_gpu: dict[int, str] = {}
        seen_nic: dict[str, str] = {}
        for sw in self.pcie_switches:
            for g in sw.gpus:
                if not 0 <= g < n:
                    raise ValueError(f"PCIe switch {sw.name!r} lists GPU {g}, which does not exist (GPUs 0..{n - 1})")
                if g in seen_gpu:
                    raise ValueError(f"GPU {g} is under two PCIe switches ({seen_gpu[g]!r}, {sw.name!r})")
                seen_gpu[g] = sw.name
            for name in sw.nics:
                if name not in names:
                    raise ValueError(f"PCIe switch {sw.name!r} lists NIC {name!r}, which is not among the NICs "
                                     f"({', '.join(names) or 'none'})")
                if name in seen_nic:
                    raise ValueError(f"NIC {name!r} is under two PCIe switches")
                seen_nic[name] = sw.name
        if self.numa_nodes > 1 and self.cpu_interconnect is None:
            raise ValueError("numa_nodes > 1 needs cpu_interconnect (the socket-to-socket rate, e.g. '62 GB/s')")
        if n and self.pcie is None:
            raise ValueError("GPUs need pcie: {generation, width}")
        return self

    @property
    def ranks(self) -> int:
        return self.ranks_per_node or max(self.gpus.count, 1)

    def gpu_numa(self, gpu: int) -> int:
        if self.gpus.numa is not None:
            return self.gpus.numa[gpu]
        return gpu * self.numa_nodes // max(self.gpus.count, 1)

    def nic(self, name: str) -> NIC:
        for nic in self.nics:
            if nic.name == name:
                return nic
        raise KeyError(name)

    def nics_of_gpu(self, gpu: int) -> list[NIC]:
        return [nic for nic in self.nics if gpu in nic.gpus]

    def nvlink_per_gpu(self) -> float:
        return self.nvlink.links_per_gpu * self.nvlink.link_rate if self.nvlink else 0.0

    def nvls_enabled(self) -> bool:
        if self.nvlink is None or self.nvlink.topology != "nvswitch":
            return False
        return self.nvlink.nvls if self.nvlink.nvls is not None else self.nvlink.generation >= 4


class Switch(Model):
    name: str = Field(min_length=1)
    switches: list[str] = []  # children
    nodes: list[str] = []  # host names directly attached
    uplink_rate: Rate | None = None  # this switch's total capacity toward each parent


class Rail(Model):
    name: str = Field(min_length=1)
    nics: list[str] = Field(min_length=1)  # NIC names (of the node type) cabled to this rail's leaves


class Fabric(Model):
    kind: Literal["none", "single_switch", "leaf_spine", "rail_optimized", "tree"]
    node_type: str
    nodes: int | None = Field(default=None, ge=1, le=MAX_HOSTS)
    node_names: str | None = None  # a Slurm hostlist, e.g. dgx[001-032]
    link_layer: LinkLayer | None = None
    link_rate: Rate | None = None  # host port ↔ leaf; default: each NIC's own rate
    uplink_rate: Rate | None = None  # each leaf ↔ spine link; default: from oversubscription
    leaves: int | None = Field(default=None, ge=1, le=MAX_HOSTS)  # leaf_spine: leaf count; rail_optimized: leaves per rail
    nodes_per_leaf: int | None = Field(default=None, ge=1, le=MAX_HOSTS)
    spines: int | None = Field(default=None, ge=1, le=4096)
    oversubscription: float = Field(default=1.0, gt=0, le=64)  # downlink : uplink capacity of a leaf
    rails: list[Rail] | None = None
    switches: list[Switch] | None = None  # tree: explicit switches (from Slurm topology.conf or ibnetdiscover)
    blocks: dict[str, list[str]] | None = None  # Slurm topology/block: block name → hosts (informational)


class Topology(Model):
    schema_version: Literal[1] = 1
    name: str = Field(min_length=1)
    description: str = ""
    sources: list[str] = []  # where the figures come from
    node_types: dict[str, NodeType] = Field(min_length=1)
    fabric: Fabric
    evidence: dict[str, Any] | None = None  # link-state evidence read during discovery
    discovery: dict[str, Any] | None = None  # what discovery read and could not read

    @model_validator(mode="after")
    def _check(self) -> "Topology":
        fab = self.fabric
        if fab.node_type not in self.node_types:
            raise ValueError(f"fabric.node_type {fab.node_type!r} is not among node_types "
                             f"({', '.join(self.node_types)})")
        nt = self.node_types[fab.node_type]
        nic_names = [nic.name for nic in nt.nics]
        if fab.rails is not None:
            if fab.kind != "rail_optimized":
                raise ValueError("fabric.rails is only for kind: rail_optimized")
            seen: set[str] = set()
            for rail in fab.rails:
                for name in rail.nics:
                    if name not in nic_names:
                        raise ValueError(f"rail {rail.name!r} names NIC {name!r}, which node type "
                                         f"{fab.node_type!r} does not have (NICs: {', '.join(nic_names) or 'none'})")
                    if name in seen:
                        raise ValueError(f"NIC {name!r} is on two rails")
                    seen.add(name)
        hosts = self.host_names()
        if fab.kind == "none" and len(hosts) != 1:
            raise ValueError(f"fabric kind none is one host; this topology has {len(hosts)} (use single_switch)")
        if fab.kind in ("leaf_spine", "rail_optimized"):
            if not fab.nodes_per_leaf:
                raise ValueError(f"fabric kind {fab.kind} needs nodes_per_leaf")
        if fab.kind == "rail_optimized" and not nt.nics:
            raise ValueError("fabric kind rail_optimized needs NICs in the node type")
        if fab.kind in ("none", "single_switch", "tree"):
            given = [k for k in ("leaves", "nodes_per_leaf", "spines", "uplink_rate") if getattr(fab, k) is not None]
            if given:
                raise ValueError(f"fabric.{given[0]} is for kind leaf_spine or rail_optimized, not {fab.kind}"
                                 + (" (a tree's switches carry their own uplink_rate)" if fab.kind == "tree" else ""))
        if fab.kind == "tree" and (fab.nodes is not None or fab.node_names is not None):
            raise ValueError("fabric kind tree takes its hosts from switches[].nodes; drop nodes/node_names")
        if fab.kind == "tree":
            self._check_tree()
        elif fab.switches:
            raise ValueError("fabric.switches is only for kind: tree")
        if nt.nvlink and nt.nvlink.domain_hosts > 1 and len(hosts) % nt.nvlink.domain_hosts:
            raise ValueError(f"{len(hosts)} hosts do not fill whole NVLink domains of "
                             f"{nt.nvlink.domain_hosts} hosts")
        return self

    def _check_tree(self) -> None:
        switches = self.fabric.switches or []
        if not switches:
            raise ValueError("fabric kind tree needs switches: [{name, switches, nodes}, ...]")
        names = [s.name for s in switches]
        dup = {x for x in names if names.count(x) > 1}
        if dup:
            raise ValueError(f"switch {sorted(dup)[0]!r} is defined twice")
        graph = nx.DiGraph()
        graph.add_nodes_from(names)
        for sw in switches:
            for child in sw.switches:
                if child not in names:
                    raise ValueError(f"switch {sw.name!r} lists child switch {child!r}, which is not defined")
                graph.add_edge(sw.name, child)
        if not nx.is_directed_acyclic_graph(graph):
            cycle = nx.find_cycle(graph)
            raise ValueError("the switch tree has a cycle (" + " -> ".join([a for a, _ in cycle] + [cycle[0][0]])
                             + "); a tree is required")
        if not nx.is_weakly_connected(graph):
            raise ValueError("the switches form several disconnected trees; a tree needs one root")

    def host_names(self) -> list[str]:
        fab = self.fabric
        if fab.kind == "tree":
            hosts: list[str] = []
            for sw in fab.switches or []:
                hosts.extend(h for h in sw.nodes if h not in hosts)
            return hosts
        if fab.node_names:
            import hostlist

            if hostlist_size(fab.node_names) > MAX_HOSTS:
                raise ValueError(f"fabric.node_names {fab.node_names!r} names more than {MAX_HOSTS} hosts")
            try:
                names = hostlist.expand_hostlist(fab.node_names)
            except hostlist.BadHostlist as err:
                raise ValueError(f"fabric.node_names {fab.node_names!r} is not a hostlist ({err})") from None
            if fab.nodes is not None and fab.nodes != len(names):
                raise ValueError(f"fabric.nodes is {fab.nodes} but node_names has {len(names)} hosts")
            return names
        count = fab.nodes or 1
        width = max(2, len(str(count)))
        return [f"node{i + 1:0{width}d}" for i in range(count)]

    @property
    def node_type(self) -> NodeType:
        return self.node_types[self.fabric.node_type]


def dump_rate(value: float | None) -> str | None:
    return None if value is None else format_rate(value)
