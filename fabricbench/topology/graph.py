"""A topology as a networkx graph: GPUs, NVSwitches, PCIe switches, NUMA nodes, NICs, fabric switches.

Every edge carries `rate` (line, GB/s per direction), `cls` (its efficiency class) and `label`. Node ids are
`host:gpu0`, `host:mlx5_0`, `host:numa0`, `host:<pcie switch>`, `nvl<k>:nvswitch` (one per NVLink domain) and
the fabric's switch names.
"""

from __future__ import annotations

import math

import networkx as nx

from fabricbench.errors import UsageError
from fabricbench.topology.efficiency import efficiency, nvlink_class
from fabricbench.topology.rates import format_rate, pcie_rate
from fabricbench.topology.schema import NodeType, Topology


def _add(graph: nx.Graph, a: str, b: str, rate: float, cls: str, label: str) -> None:
    if rate <= 0 or not math.isfinite(rate):
        raise UsageError(f"link {a} - {b} has a non-positive rate")
    if graph.has_edge(a, b):  # parallel cables: capacities add
        graph[a][b]["rate"] += rate
        graph[a][b]["label"] += f" + {label}"
        return
    graph.add_edge(a, b, rate=rate, cls=cls, label=label)


def nic_line_rate(topo: Topology, nic) -> float:
    rate = nic.rate
    if topo.fabric.link_rate is not None:
        rate = min(rate, topo.fabric.link_rate)
    return rate


def nic_class(topo: Topology, nic) -> str:
    return topo.fabric.link_layer or nic.link_layer


def add_host(graph: nx.Graph, topo: Topology, host: str, index: int) -> None:
    nt = topo.node_type
    for k in range(nt.numa_nodes):
        graph.add_node(f"{host}:numa{k}", kind="cpu", host=host)
    for a in range(nt.numa_nodes):
        for b in range(a + 1, nt.numa_nodes):
            _add(graph, f"{host}:numa{a}", f"{host}:numa{b}", nt.cpu_interconnect, "cpu",
                 f"CPU interconnect {format_rate(nt.cpu_interconnect)}")
    gpu_pcie = pcie_rate(nt.pcie.generation, nt.pcie.width) if nt.pcie else None
    for sw in nt.pcie_switches:
        node = f"{host}:{sw.name}"
        graph.add_node(node, kind="pcie_switch", host=host)
        up = sw.uplink or nt.pcie
        if up is None:
            raise UsageError(f"PCIe switch {sw.name!r} needs an uplink (the node type has no GPU pcie either)")
        numa = nt.gpu_numa(sw.gpus[0]) if sw.gpus else (nt.nic(sw.nics[0]).numa or 0 if sw.nics else 0)
        _add(graph, node, f"{host}:numa{numa}", pcie_rate(up.generation, up.width), "pcie",
             f"PCIe {up.generation} x{up.width}")
    switch_of_gpu = {g: sw.name for sw in nt.pcie_switches for g in sw.gpus}
    switch_of_nic = {n: sw.name for sw in nt.pcie_switches for n in sw.nics}
    for g in range(nt.gpus.count):
        node = f"{host}:gpu{g}"
        graph.add_node(node, kind="gpu", host=host, index=g)
        parent = f"{host}:{switch_of_gpu[g]}" if g in switch_of_gpu else f"{host}:numa{nt.gpu_numa(g)}"
        _add(graph, node, parent, gpu_pcie, "pcie", f"PCIe {nt.pcie.generation} x{nt.pcie.width}")
    for nic in nt.nics:
        node = f"{host}:{nic.name}"
        graph.add_node(node, kind="nic", host=host, rate=nic.rate, link_layer=nic.link_layer)
        parent = f"{host}:{switch_of_nic[nic.name]}" if nic.name in switch_of_nic else f"{host}:numa{nic.numa or 0}"
        pcie = nic.pcie or nt.pcie
        rate = pcie_rate(pcie.generation, pcie.width) if pcie else nic.rate
        _add(graph, node, parent, rate, "pcie", f"PCIe {pcie.generation} x{pcie.width}" if pcie else "host bus")
    nvl = nt.nvlink
    if nvl is not None:
        cls = nvlink_class(nvl.generation)
        if nvl.topology == "nvswitch":
            switch = f"nvl{index // nvl.domain_hosts}:nvswitch"
            graph.add_node(switch, kind="nvswitch", domain=index // nvl.domain_hosts)
            for g in range(nt.gpus.count):
                _add(graph, f"{host}:gpu{g}", switch, nvl.links_per_gpu * nvl.link_rate, cls,
                     f"NVLink{nvl.generation} x{nvl.links_per_gpu}")
        else:
            for a, b, links in nvl.connections or []:
                _add(graph, f"{host}:gpu{a}", f"{host}:gpu{b}", links * nvl.link_rate, cls,
                     f"NVLink{nvl.generation} x{links}")


def host_ports(topo: Topology, host: str) -> list[tuple[str, float, str, str]]:
    """(graph node, line rate, class, NIC name) of a host's fabric ports; a host without NICs uses its CPU."""
    nt = topo.node_type
    if nt.nics:
        return [(f"{host}:{nic.name}", nic_line_rate(topo, nic), nic_class(topo, nic), nic.name) for nic in nt.nics]
    if topo.fabric.kind == "none":
        return []
    if topo.fabric.link_rate is None:
        raise UsageError(f"node type {topo.fabric.node_type!r} has no NICs and the fabric no link_rate: "
                         "nothing says how fast a host reaches the network")
    return [(f"{host}:numa0", topo.fabric.link_rate, topo.fabric.link_layer or "ethernet", "host")]


def _leaf_spine(graph: nx.Graph, topo: Topology, hosts: list[str]) -> None:
    fab = topo.fabric
    per_leaf = fab.nodes_per_leaf
    leaves = math.ceil(len(hosts) / per_leaf)
    # the whole fabric must fill exactly its leaves; its first N hosts (a layout) use the first leaves only
    whole = len(hosts) == len(topo.host_names())
    if fab.leaves is not None and (fab.leaves != leaves if whole else leaves > fab.leaves):
        raise UsageError(f"fabric: {len(hosts)} hosts at {per_leaf} per leaf need {leaves} leaves, "
                         f"but leaves is {fab.leaves}")
    down: dict[str, float] = {}
    for i, host in enumerate(hosts):
        leaf = f"leaf{i // per_leaf + 1}"
        graph.add_node(leaf, kind="switch", tier=1)
        for node, rate, cls, _name in host_ports(topo, host):
            _add(graph, node, leaf, rate, cls, f"{format_rate(rate)} {cls}")
            down[leaf] = down.get(leaf, 0.0) + rate
    _spines(graph, topo, down)


def _spines(graph: nx.Graph, topo: Topology, down: dict[str, float]) -> None:
    fab = topo.fabric
    if len(down) <= 1 and not fab.spines:
        return
    spines = fab.spines or 1
    for s in range(spines):
        spine = f"spine{s + 1}"
        graph.add_node(spine, kind="switch", tier=2)
        for leaf, capacity in down.items():
            rate = fab.uplink_rate if fab.uplink_rate is not None else capacity / fab.oversubscription / spines
            cls = fab.link_layer or graph.edges[next(iter(graph.edges(leaf)))]["cls"]
            _add(graph, leaf, spine, rate, cls, f"uplink {format_rate(rate)}")


def _rail_optimized(graph: nx.Graph, topo: Topology, hosts: list[str]) -> None:
    fab = topo.fabric
    nt = topo.node_type
    if fab.rails:
        rail_of = {name: rail.name for rail in fab.rails for name in rail.nics}
    else:  # one rail per NIC, in order
        rail_of = {nic.name: f"rail{i + 1}" for i, nic in enumerate(nt.nics)}
    groups = math.ceil(len(hosts) / fab.nodes_per_leaf)
    if fab.leaves is not None and fab.leaves != groups:
        raise UsageError(f"fabric: {len(hosts)} hosts at {fab.nodes_per_leaf} per leaf need {groups} leaves per "
                         f"rail, but leaves is {fab.leaves}")
    down: dict[str, float] = {}
    for i, host in enumerate(hosts):
        for node, rate, cls, name in host_ports(topo, host):
            if name not in rail_of:
                continue  # a NIC on no rail (storage, management) does not join the compute fabric
            leaf = f"{rail_of[name]}-leaf{i // fab.nodes_per_leaf + 1}"
            graph.add_node(leaf, kind="switch", tier=1, rail=rail_of[name])
            _add(graph, node, leaf, rate, cls, f"{format_rate(rate)} {cls}")
            down[leaf] = down.get(leaf, 0.0) + rate
    _spines(graph, topo, down)


def _tree(graph: nx.Graph, topo: Topology, hosts: list[str]) -> None:
    fab = topo.fabric
    switches = {sw.name: sw for sw in fab.switches or []}
    listed: dict[str, list[str]] = {}
    for sw in switches.values():
        graph.add_node(sw.name, kind="switch")
        for host in sw.nodes:
            listed.setdefault(host, []).append(sw.name)
    for host, under in listed.items():
        if host not in hosts:
            continue
        # a host under several switches (one per rail) spreads its ports over them in order
        for i, (node, rate, cls, _name) in enumerate(host_ports(topo, host)):
            leaf = under[i % len(under)]
            _add(graph, node, leaf, rate, cls, f"{format_rate(rate)} {cls}")

    def capacity_below(name: str) -> float:  # what a non-blocking uplink carries: every host port below
        below: set[str] = set()
        stack, seen = [name], set()
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            below.update(h for h in switches[current].nodes if h in hosts)
            stack.extend(switches[current].switches)
        return sum(rate for host in below for _n, rate, _c, _x in host_ports(topo, host))

    for sw in switches.values():
        for child in sw.switches:
            parents = [p for p in switches.values() if child in p.switches]
            child_sw = switches[child]
            if child_sw.uplink_rate is not None:
                rate = child_sw.uplink_rate / len(parents)
            else:
                rate = capacity_below(child) / fab.oversubscription / len(parents)
            if rate <= 0:
                continue
            cls = fab.link_layer or (topo.node_type.nics[0].link_layer if topo.node_type.nics else "ethernet")
            _add(graph, child, sw.name, rate, cls, f"uplink {format_rate(rate)}")


def build_graph(topo: Topology, nodes: int | None = None) -> nx.Graph:
    """The whole topology, or only its first `nodes` hosts with the fabric they use."""
    hosts = topo.host_names()
    if nodes is not None:
        if nodes > len(hosts):
            raise UsageError(f"--nodes {nodes}: topology {topo.name!r} has {len(hosts)} hosts")
        hosts = hosts[:nodes]
    graph = nx.Graph(name=topo.name)
    for index, host in enumerate(topo.host_names()):
        if host in hosts:
            add_host(graph, topo, host, index)
    kind = topo.fabric.kind
    if kind == "single_switch":
        graph.add_node("switch", kind="switch", tier=1)
        for host in hosts:
            for node, rate, cls, _name in host_ports(topo, host):
                _add(graph, node, "switch", rate, cls, f"{format_rate(rate)} {cls}")
    elif kind == "leaf_spine":
        _leaf_spine(graph, topo, hosts)
    elif kind == "rail_optimized":
        _rail_optimized(graph, topo, hosts)
    elif kind == "tree":
        _tree(graph, topo, hosts)
    for _a, _b, data in graph.edges(data=True):
        data["achievable"] = data["rate"] * efficiency(data["cls"]).factor
    return graph
