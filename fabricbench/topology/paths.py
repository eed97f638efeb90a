"""Expected bandwidth between two endpoints (GPU, NIC or host): path(s), bottleneck, line and achievable rate."""

from __future__ import annotations

import heapq
import itertools
import re

import networkx as nx

from fabricbench.errors import UsageError
from fabricbench.topology.rates import sig as _sig
from fabricbench.topology.efficiency import efficiency
from fabricbench.topology.rates import format_rate
from fabricbench.topology.schema import Topology


def resolve_endpoint(graph: nx.Graph, topo: Topology, spec: str) -> tuple[str, list[str], str]:
    """'node01:gpu3' / 'node01:mlx5_0' / 'node01' / 'gpu3' (first host) → (kind, graph nodes, host)."""
    hosts = [h for h in topo.host_names() if any(graph.nodes[n].get("host") == h for n in graph.nodes)]
    spec = spec.strip()
    host, _, part = spec.rpartition(":") if ":" in spec else ("", "", spec)
    all_hosts = topo.host_names()
    if not host:
        if part in hosts or part in all_hosts:
            host, part = part, ""
        elif re.fullmatch(r"gpu\d+", part) or any(part == n.name for n in topo.node_type.nics):
            host = hosts[0] if hosts else ""
        else:
            raise UsageError(f"endpoint {spec!r}: neither a host nor a GPU/NIC name (hosts: {_short(hosts)}; "
                             "write host, host:gpuN or host:NIC)")
    if host in all_hosts and host not in hosts:
        raise UsageError(f"endpoint {spec!r}: host {host} is not among the {len(hosts)} host(s) of this layout "
                         "(raise --nodes)")
    if host not in hosts:
        raise UsageError(f"endpoint {spec!r}: no host {host!r} (hosts: {_short(hosts)})")
    if not part:
        members = [n for n, d in graph.nodes(data=True) if d.get("host") == host and d.get("kind") == "gpu"]
        if not members:
            members = [n for n, d in graph.nodes(data=True) if d.get("host") == host and d.get("kind") == "nic"]
        if not members:
            members = [f"{host}:numa0"]
        return "host", members, host
    node = f"{host}:{part}"
    if node not in graph or graph.nodes[node].get("kind") not in ("gpu", "nic", "cpu"):
        names = sorted(n.split(":", 1)[1] for n, d in graph.nodes(data=True)
                       if d.get("host") == host and d.get("kind") in ("gpu", "nic"))
        raise UsageError(f"endpoint {spec!r}: host {host} has no {part!r} (it has {_short(names)})")
    return graph.nodes[node]["kind"], [node], host


def _short(items: list[str], limit: int = 12) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "") or "none"


def _transit_ok(graph: nx.Graph, node: str, hosts: set[str], ends: set[str]) -> bool:
    data = graph.nodes[node]
    if node in ends:
        return True
    if data.get("kind") == "gpu":
        return False  # no relaying through a third GPU
    host = data.get("host")
    return host is None or host in hosts


def widest_path(graph: nx.Graph, src: str, dst: str, hosts: set[str]) -> list[str] | None:
    """The path with the largest bottleneck (line rate); among those the fewest hops."""
    ends = {src, dst}
    best = {src: (float("inf"), 0)}
    heap = [(-float("inf"), 0, next(_COUNTER), src, [src])]
    while heap:
        neg_bw, hops, _, node, path = heapq.heappop(heap)
        if node == dst:
            return path
        for nxt in graph.neighbors(node):
            if not _transit_ok(graph, nxt, hosts, ends) or nxt in path:
                continue
            bw = min(-neg_bw, graph[node][nxt]["rate"])
            key = (bw, -(hops + 1))
            if nxt not in best or key > (best[nxt][0], -best[nxt][1]):
                best[nxt] = (bw, hops + 1)
                heapq.heappush(heap, (-bw, hops + 1, next(_COUNTER), nxt, path + [nxt]))
    return None


_COUNTER = itertools.count()


def _edge_info(graph: nx.Graph, a: str, b: str) -> dict:
    data = graph[a][b]
    eff = efficiency(data["cls"])
    return {"link": f"{a} - {b}", "label": data["label"], "class": data["cls"], "line_GBps": _sig(data["rate"]),
            "achievable_GBps": _sig(data["achievable"]), "efficiency": eff.factor, "efficiency_source": eff.fitted_on}


def pair(graph: nx.Graph, topo: Topology, a: str, b: str, max_paths: int = 8) -> dict:
    kind_a, nodes_a, host_a = resolve_endpoint(graph, topo, a)
    kind_b, nodes_b, host_b = resolve_endpoint(graph, topo, b)
    if set(nodes_a) & set(nodes_b):
        raise UsageError(f"endpoints {a!r} and {b!r} are the same")
    hosts = {host_a, host_b}
    if kind_a == "host" or kind_b == "host":
        return _host_pair(graph, a, b, nodes_a, nodes_b, hosts)
    src, dst = nodes_a[0], nodes_b[0]
    path = widest_path(graph, src, dst, hosts)
    if path is None:
        raise UsageError(f"no path between {a} and {b} in this topology")
    edges = list(zip(path, path[1:]))
    line = min(graph[u][v]["rate"] for u, v in edges)
    achievable = min(graph[u][v]["achievable"] for u, v in edges)
    bottleneck = [_edge_info(graph, u, v) for u, v in edges if graph[u][v]["achievable"] <= achievable + 1e-9]
    # equal alternatives: shortest paths over links at least as fast as the bottleneck (ECMP over spines, rails)
    fast = nx.subgraph_view(graph, filter_node=lambda n: _transit_ok(graph, n, hosts, {src, dst}),
                            filter_edge=lambda u, v: graph[u][v]["rate"] >= line - 1e-9)
    paths = []
    try:
        for p in nx.all_shortest_paths(fast, src, dst):
            if len(p) != len(path):
                break
            paths.append(p)
            if len(paths) >= max_paths:
                break
    except nx.NetworkXNoPath:
        pass
    if path not in paths:
        paths.insert(0, path)
    return {"a": a, "b": b, "kind": "pair", "paths": [" > ".join(p) for p in paths], "hops": len(path) - 1,
            "line_GBps": _sig(line), "expected_GBps": _sig(achievable), "bottleneck": bottleneck}


def _host_pair(graph, a, b, nodes_a, nodes_b, hosts) -> dict:
    view = nx.subgraph_view(graph, filter_node=lambda n: _transit_ok(graph, n, hosts, set(nodes_a) | set(nodes_b)))
    results = {}
    for key in ("rate", "achievable"):
        flow_graph = nx.DiGraph()
        for u, v, data in view.edges(data=True):
            flow_graph.add_edge(u, v, capacity=data[key])
            flow_graph.add_edge(v, u, capacity=data[key])
        for n in nodes_a:
            flow_graph.add_edge("__src__", n)  # no capacity attribute: unbounded
        for n in nodes_b:
            flow_graph.add_edge(n, "__dst__")
        value, _ = nx.maximum_flow(flow_graph, "__src__", "__dst__")
        cut_value, (side_s, _side_t) = nx.minimum_cut(flow_graph, "__src__", "__dst__")
        cut = [(u, v) for u in side_s for v in flow_graph.successors(u) if v not in side_s
               and u != "__src__" and v != "__dst__"]
        results[key] = (value, cut)
    line, cut = results["rate"]
    achievable, _ = results["achievable"]
    if line <= 0:
        raise UsageError(f"no path between {a} and {b} in this topology")
    return {"a": a, "b": b, "kind": "hosts (max flow over all their GPUs/NICs)", "paths": [],
            "line_GBps": _sig(line), "expected_GBps": _sig(achievable),
            "bottleneck": [_edge_info(graph, u, v) for u, v in cut][:16],
            "bottleneck_note": f"minimum cut of {len(cut)} links, {format_rate(line)} line in all"}
