"""Drawings of a topology (matplotlib, Agg backend): a host's or NVLink domain's inside, the switch tree, and a
host × leaf heatmap when there are too many hosts to draw one by one."""

from __future__ import annotations

import io
import math
from pathlib import Path

import networkx as nx

from fabricbench.errors import UsageError
from fabricbench.topology.graph import build_graph
from fabricbench.topology.schema import Topology

MAX_DRAWN_HOSTS = 64
LAYER = {"nvswitch": 0, "gpu": 1, "pcie_switch": 2, "nic": 3, "cpu": 4}
COLOURS = {"nvlink": "#76b900", "pcie": "#1f77b4", "ib": "#d62728", "roce": "#ff7f0e", "ethernet": "#9467bd",
           "emulated": "#8c564b", "cpu": "#7f7f7f", "memory": "#7f7f7f"}


def _colour(cls: str) -> str:
    return COLOURS.get("nvlink" if cls.startswith("nvlink") else cls, "#333333")


def _width(rate: float) -> float:
    return 0.6 + 1.2 * math.log10(1 + rate)


def _natural(name: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _layered(graph: nx.Graph, key: str) -> dict:
    """Each layer on its own row (layer 0 on top), nodes in natural name order, spread over the same width."""
    layers: dict[int, list] = {}
    for n, d in graph.nodes(data=True):
        layers.setdefault(d[key], []).append(n)
    pos = {}
    for row, layer in enumerate(sorted(layers)):
        members = sorted(layers[layer], key=lambda n: _natural(str(n)))
        for i, n in enumerate(members):
            pos[n] = ((i + 0.5) / len(members), -row)
    return pos


def _node_view(ax, graph: nx.Graph, topo: Topology, host: str) -> None:
    hosts = {host}
    nvl = topo.node_type.nvlink
    if nvl and nvl.domain_hosts > 1:  # draw the whole NVLink domain the host belongs to
        names = topo.host_names()
        index = names.index(host)
        first = index - index % nvl.domain_hosts
        hosts = set(names[first:first + nvl.domain_hosts])
    keep = [n for n, d in graph.nodes(data=True) if d.get("host") in hosts or d.get("kind") == "nvswitch"
            and any(graph.nodes[m].get("host") in hosts for m in graph.neighbors(n))]
    sub = graph.subgraph(keep)
    for n in sub.nodes:
        sub.nodes[n]["layer"] = LAYER.get(sub.nodes[n].get("kind"), 5)
    sub = nx.Graph(sub)
    pos = _layered(sub, "layer")
    for u, v, d in sub.edges(data=True):
        (x1, y1), (x2, y2) = pos[u], pos[v]
        ax.plot([x1, x2], [y1, y2], color=_colour(d["cls"]), linewidth=_width(d["rate"]), alpha=0.6, zorder=1)
    shapes = {"gpu": ("s", "#76b900"), "nvswitch": ("D", "#4d7c0f"), "pcie_switch": ("^", "#1f77b4"),
              "nic": ("o", "#d62728"), "cpu": ("h", "#7f7f7f")}
    small = len(sub) > 40
    for n, d in sub.nodes(data=True):
        marker, colour = shapes.get(d.get("kind"), ("o", "#333333"))
        x, y = pos[n]
        ax.scatter([x], [y], marker=marker, s=60 if small else 220, color=colour, zorder=2, edgecolors="black")
        label = n.split(":", 1)[1] if len(hosts) == 1 or d.get("kind") == "nvswitch" else n
        ax.annotate(label, (x, y), fontsize=4 if small else 7, ha="center", va="bottom",
                    xytext=(0, 6), textcoords="offset points", rotation=90 if small else 0)
    what = f"NVLink domain of {len(hosts)} hosts" if len(hosts) > 1 else host
    ax.set_title(f"{topo.name}: inside {what}", fontsize=9)
    ax.axis("off")


def _collapsed(graph: nx.Graph) -> nx.Graph:
    """Hosts as single nodes; parallel host-leaf links summed."""
    out = nx.Graph()
    for u, v, d in graph.edges(data=True):
        a = graph.nodes[u].get("host") or u
        b = graph.nodes[v].get("host") or v
        if a == b or "nvswitch" in a or "nvswitch" in b:
            continue
        if out.has_edge(a, b):
            out[a][b]["rate"] += d["rate"]
        else:
            out.add_edge(a, b, rate=d["rate"], cls=d["cls"])
    for n in out.nodes:
        data = graph.nodes[n] if n in graph else {}
        out.nodes[n]["layer"] = -(data.get("tier", 1)) if data.get("kind") == "switch" else 0
        out.nodes[n]["kind"] = data.get("kind", "host")
    return out


def _fabric_view(ax, graph: nx.Graph, topo: Topology) -> None:
    sub = _collapsed(graph)
    if sub.number_of_nodes() == 0:
        ax.text(0.5, 0.5, "one host, no fabric", ha="center")
        ax.axis("off")
        return
    if topo.fabric.kind == "tree":  # depth from the roots
        switches = [n for n, d in sub.nodes(data=True) if d["kind"] == "switch"]
        depth = {}
        for sw in topo.fabric.switches or []:
            for child in sw.switches:
                depth.setdefault(child, 0)
        roots = [s for s in switches if s not in depth]
        lengths = nx.multi_source_dijkstra_path_length(sub.subgraph(switches), roots) if roots else {}
        for s in switches:
            sub.nodes[s]["layer"] = -10 + lengths.get(s, 0)
    pos = _layered(sub, "layer")
    for u, v, d in sub.edges(data=True):
        (x1, y1), (x2, y2) = pos[u], pos[v]
        ax.plot([x1, x2], [y1, y2], color=_colour(d["cls"]), linewidth=_width(d["rate"]) / 2, alpha=0.5, zorder=1)
    hosts = [n for n, d in sub.nodes(data=True) if d["kind"] != "switch"]
    for n, d in sub.nodes(data=True):
        x, y = pos[n]
        is_switch = d["kind"] == "switch"
        ax.scatter([x], [y], marker="s" if is_switch else "o", s=120 if is_switch else 40,
                   color="#444444" if is_switch else "#76b900", zorder=2)
        if is_switch or len(hosts) <= 32:
            ax.annotate(n, (x, y), fontsize=6, ha="center", va="bottom", xytext=(0, 5), textcoords="offset points",
                        rotation=0 if is_switch else 90)
    ax.set_title(f"{topo.name}: fabric ({topo.fabric.kind}, {len(hosts)} hosts)", fontsize=9)
    ax.axis("off")


def _heatmap_view(ax, graph: nx.Graph, topo: Topology) -> None:
    sub = _collapsed(graph)
    hosts = [h for h in topo.host_names() if h in sub]
    leaves = sorted({n for h in hosts for n in sub.neighbors(h) if sub.nodes[n]["kind"] == "switch"})
    import numpy as np

    matrix = np.zeros((len(hosts), len(leaves)))
    for i, h in enumerate(hosts):
        for j, leaf in enumerate(leaves):
            if sub.has_edge(h, leaf):
                matrix[i, j] = sub[h][leaf]["rate"] * 8
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xlabel("leaf switch")
    ax.set_ylabel("host")
    if len(leaves) <= 40:
        ax.set_xticks(range(len(leaves)), leaves, rotation=90, fontsize=5)
    ax.set_title(f"{topo.name}: host x leaf line rate (Gb/s), {len(hosts)} hosts", fontsize=9)
    ax.figure.colorbar(image, ax=ax, fraction=0.04)


def draw(topo: Topology, out: str, nodes: int | None = None, host: str | None = None, view: str = "auto") -> Path:
    path = Path(out)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise UsageError(f"--out {out}: choose a .png or .svg file")
    if view not in ("auto", "node", "fabric", "heatmap"):
        raise UsageError(f"--view {view!r}: choose auto, node, fabric or heatmap")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fabricbench.results.io import atomic_write_bytes

    graph = build_graph(topo, nodes)
    names = [h for h in topo.host_names() if any(d.get("host") == h for _, d in graph.nodes(data=True))]
    host = host or names[0]
    if host not in names:
        raise UsageError(f"--host {host!r}: not among the hosts drawn ({', '.join(names[:8])}...)")
    many = len(names) > MAX_DRAWN_HOSTS
    views = {"auto": ["node", "heatmap" if many else "fabric"], "node": ["node"], "fabric": ["fabric"],
             "heatmap": ["heatmap"]}[view]
    if topo.fabric.kind == "none" and view == "auto":
        views = ["node"]
    fig, axes = plt.subplots(1, len(views), figsize=(9 * len(views), 7), squeeze=False)
    try:
        for ax, name in zip(axes[0], views):
            if name == "node":
                _node_view(ax, graph, topo, host)
            elif name == "fabric":
                _fabric_view(ax, graph, topo)
            else:
                _heatmap_view(ax, graph, topo)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=150)
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
