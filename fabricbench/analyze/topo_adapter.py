"""Adapter to the topology: which leaf each host hangs off, the spines, and the expected pair bandwidth.

Sources, in order: a fabricbench topology (`fabricbench.topology`, when that package is importable and the
file validates: leaf_spine, tree and rail_optimized fabrics, expectation from its graph and path model), then
the raw YAML of a topology file (`fabric: {kind: leaf_spine, node_names, nodes_per_leaf, spines}`, as the lab
writes), then the analyzer's own small format:

    leaves: {leaf1: [node1, node2], leaf2: [node3, node4]}
    spines: [spine1]                 # optional
    expected_gbps: {intra-leaf: 48, inter-leaf: 46}   # optional, or one number for every pair

Kept deliberately small: everything the localization needs is `leaf_of` (host -> leaf) and `spines`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fabricbench.errors import UsageError


@dataclass
class Fabric:
    name: str
    leaf_of: dict[str, str] = field(default_factory=dict)
    spines: list[str] = field(default_factory=list)
    expected: dict[str, float] = field(default_factory=dict)  # path class -> GB/s
    source: str = ""
    notes: list[str] = field(default_factory=list)
    topo: object = None  # the fabricbench.topology model, when the package read the file
    oversubscription: float | None = None  # leaf downlink : uplink capacity, when the topology says

    def collisions_possible(self) -> bool:
        """Can concurrent flows share a link and slow each other? Not on a non-blocking fabric with one spine
        (every leaf's uplink carries all its hosts at full rate); yes with several spines (ECMP hashing may put
        two flows on one link) or oversubscribed uplinks, and when the topology does not say."""
        if self.oversubscription is None:
            return True
        return self.oversubscription > 1.0 or len(self.spines) > 1

    def collective_expected(self, op: str, nodes: int, per_node: int | None) -> tuple[float, str] | None:
        """Expected busbw (GB/s) of a collective from fabricbench.topology: the lowest applicable algorithm's
        (a conservative bar: the run may not have used NVLS or tree), and the formula behind it."""
        if self.topo is None:
            return None
        try:
            from fabricbench.topology.collectives import expectations

            name = {"alltoall": "all_to_all", "allreduce": "all_reduce", "allgather": "all_gather",
                    "reducescatter": "reduce_scatter"}.get(op, op)
            table = expectations(self.topo, nodes, per_node, [name], None)
        except Exception:  # unknown op, more hosts than the topology has, package changes: no expectation
            return None
        rows = [r for r in table.get("rows", []) if r.get("applicable") and r.get("op") == name and r.get("expected_busbw")]
        if not rows:
            return None
        best = min(rows, key=lambda r: r["expected_busbw"])
        return float(best["expected_busbw"]), f"{best['algorithm']}: {best.get('formula', '')}"

    def leaves(self) -> list[str]:
        return sorted(set(self.leaf_of.values()), key=_natural)

    def path_class(self, a: str, b: str) -> str:
        la, lb = self.leaf_of.get(a), self.leaf_of.get(b)
        if la is None or lb is None:
            return "inter-node"
        return "intra-leaf" if la == lb else "inter-leaf"


def _natural(name: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _from_package(path: str) -> Fabric | None:
    try:
        from fabricbench.topology.load import load_topology
        from fabricbench.topology.graph import build_graph
    except ImportError:
        return None
    try:
        topo = load_topology(path)
    except UsageError:
        return None
    except Exception:  # the package is under construction: never let it break the analysis
        return None
    fab = topo.fabric
    hosts = topo.host_names()
    out = Fabric(name=topo.name, source=f"fabricbench.topology ({path})", topo=topo,
                 oversubscription=float(getattr(fab, "oversubscription", 1.0) or 1.0))
    if fab.kind in ("leaf_spine", "rail_optimized") and fab.nodes_per_leaf:
        for i, host in enumerate(hosts):
            out.leaf_of[host] = f"leaf{i // fab.nodes_per_leaf + 1}"
        out.spines = [f"spine{s + 1}" for s in range(fab.spines or (1 if len(out.leaves()) > 1 else 0))]
    elif fab.kind == "tree":
        for sw in fab.switches or []:
            for host in sw.nodes:
                out.leaf_of[host] = sw.name
        # a leaf whose uplink carries less than its hosts' links is oversubscribed: the worst leaf says it
        try:
            rate = float(fab.link_rate) if fab.link_rate else None
            ratios = [len(sw.nodes) * rate / float(sw.uplink_rate) for sw in fab.switches or []
                      if sw.nodes and sw.uplink_rate and rate]
            if ratios:
                out.oversubscription = max(max(ratios), 1.0)
        except (TypeError, ValueError, ZeroDivisionError):
            pass
        children = {c for sw in fab.switches or [] for c in sw.switches}
        out.spines = [sw.name for sw in fab.switches or [] if sw.switches and sw.name not in children]
    elif fab.kind == "single_switch":
        for host in hosts:
            out.leaf_of[host] = "switch"
    try:
        from fabricbench.topology.paths import pair as pair_path

        graph = build_graph(topo)
        by_leaf: dict[str, list[str]] = {}
        for host, leaf in out.leaf_of.items():
            by_leaf.setdefault(leaf, []).append(host)
        groups = [g for g in by_leaf.values()]
        same = next((g for g in groups if len(g) >= 2), None)
        if same:
            out.expected["intra-leaf"] = float(pair_path(graph, topo, same[0], same[1])["expected_GBps"])
        if len(groups) >= 2:
            out.expected["inter-leaf"] = float(pair_path(graph, topo, groups[0][0], groups[1][0])["expected_GBps"])
        if not out.leaf_of and len(hosts) >= 2:
            out.expected["inter-node"] = float(pair_path(graph, topo, hosts[0], hosts[1])["expected_GBps"])
    except Exception as err:  # expectation is optional; the analysis goes on without it
        out.notes.append(f"topology expectation unavailable ({type(err).__name__}: {' '.join(str(err).split())[:120]})")
    return out


def _from_yaml(doc: dict, path: str) -> Fabric:
    out = Fabric(name=str(doc.get("name") or Path(path).stem), source=path)
    if isinstance(doc.get("leaves"), dict):
        for leaf, hosts in doc["leaves"].items():
            if not isinstance(hosts, list):
                raise UsageError(f"{path}: leaves.{leaf} must be a list of host names")
            for host in hosts:
                out.leaf_of[str(host)] = str(leaf)
        out.spines = [str(s) for s in doc.get("spines") or []]
        if doc.get("oversubscription") is not None:
            out.oversubscription = float(doc["oversubscription"])
    elif isinstance(doc.get("fabric"), dict):
        fab = doc["fabric"]
        names = fab.get("node_names")
        per_leaf = fab.get("nodes_per_leaf")
        if not names or not per_leaf:
            raise UsageError(f"{path}: fabric needs node_names and nodes_per_leaf for the analyzer")
        import hostlist

        try:
            hosts = hostlist.expand_hostlist(str(names))
        except Exception:
            raise UsageError(f"{path}: fabric.node_names {names!r} is not a hostlist") from None
        from fabricbench import limits

        per_leaf = int(limits.number(per_leaf, f"{path}: fabric.nodes_per_leaf", lo=1, hi=limits.MAX_NODES, integer=True))
        spines = int(limits.number(fab.get("spines") or 1, f"{path}: fabric.spines", lo=1, hi=4096, integer=True))
        for i, host in enumerate(hosts):
            out.leaf_of[host] = f"leaf{i // per_leaf + 1}"
        out.spines = [f"spine{s + 1}" for s in range(spines)]
        out.oversubscription = float(fab.get("oversubscription") or 1.0)
    else:
        raise UsageError(f"{path}: neither 'leaves:' nor 'fabric:' found; see docs/analyze.md for the format")
    exp = doc.get("expected_gbps")
    from fabricbench import limits

    for key, value in (exp.items() if isinstance(exp, dict) else [("", exp)] if exp is not None else []):
        limits.number(value, f"{path}: expected_gbps{'.' + str(key) if key else ''}", lo=0, lo_open=True, hi=1e5)
    if isinstance(exp, (int, float)):
        out.expected = {"intra-leaf": float(exp), "inter-leaf": float(exp), "inter-node": float(exp)}
    elif isinstance(exp, dict):
        out.expected = {str(k): float(v) for k, v in exp.items()}
    return out


def load_fabric(spec: str) -> Fabric:
    """Read `--topology`: a file (or a shipped topology name when fabricbench.topology knows it)."""
    path = Path(spec)
    if path.is_file():
        from fabricbench import limits

        doc = limits.load_yaml(path, "--topology", 16 << 20)
        if isinstance(doc, dict) and "node_types" in doc:
            fab = _from_package(spec)
            if fab is not None and fab.leaf_of:
                return fab
        if not isinstance(doc, dict):
            raise UsageError(f"{spec}: a topology must be a YAML mapping")
        try:
            return _from_yaml(doc, spec)
        except (ValueError, TypeError, OverflowError) as err:  # numbers that are not numbers
            raise UsageError(f"{spec}: not a valid topology ({' '.join(str(err).split())[:160]})") from None
    fab = _from_package(spec)
    if fab is not None:
        return fab
    raise UsageError(f"{spec}: no such topology file")


def fabric_from_leaves(leaf_of: dict[str, str], spines: int = 1, name: str = "simulated",
                       oversubscription: float | None = 1.0) -> Fabric:
    return Fabric(name=name, leaf_of=dict(leaf_of), spines=[f"spine{s + 1}" for s in range(spines)], source=name,
                  oversubscription=oversubscription)
