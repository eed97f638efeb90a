"""Which leaf each node hangs off and how many concurrent cross-leaf pairs its uplink carries, for the sweep's
scheduler and its records (issue 12: contention on oversubscribed leaves is not a fault).

From a topology (fabricbench topology schema, e.g. the lab's `topology.yaml` or `--topology`):

- `leaf_of`: host -> its leaf switch (tree: the switch listing the host; leaf_spine: blocks of nodes_per_leaf);
- `uplink_pairs`: leaf -> how many pairs may cross its uplink at once at full host rate:
  floor(uplink rate / host link rate), at least 1; absent for a non-blocking leaf (no limit).

A pair (a, b) on different leaves crosses both leaves' uplinks; the sweep's directions run one at a time
within a pair but unsynchronised between pairs, so a round's cross-leaf pairs may all send the same way at
once: the limit counts pairs, not flows. Everything here is plain data (it goes into sweep.json and the plan).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

LAB_TOPOLOGY_ENV = "FABRICBENCH_LAB_DIR"  # set by `eval "$(fabricbench lab env)"`


def default_topology() -> str | None:
    """The lab's topology.yaml when this shell uses a lab (FABRICBENCH_LAB_DIR), else None."""
    lab = os.environ.get(LAB_TOPOLOGY_ENV)
    if lab and (Path(lab) / "topology.yaml").is_file():
        return str(Path(lab) / "topology.yaml")
    return None


def fabric_map(spec: str) -> dict:
    """{"source", "leaf_of": {host: leaf}, "uplink_pairs": {leaf: int}, "uplink_gbps": {leaf: GB/s},
    "host_gbps": GB/s} from a topology file or name; UsageError (one line) when it cannot be read."""
    from fabricbench.topology.graph import host_ports
    from fabricbench.topology.load import load_topology

    topo = load_topology(spec)
    fab = topo.fabric
    hosts = topo.host_names()
    leaf_of: dict[str, str] = {}
    uplink: dict[str, float] = {}
    if fab.kind == "tree":
        parents = {child for sw in fab.switches or [] for child in sw.switches}
        for sw in fab.switches or []:
            for host in sw.nodes:
                leaf_of.setdefault(host, sw.name)
            if sw.nodes and sw.uplink_rate is not None and sw.name in parents:
                uplink[sw.name] = float(sw.uplink_rate)
    elif fab.kind == "leaf_spine" and fab.nodes_per_leaf:
        for i, host in enumerate(hosts):
            leaf_of[host] = f"leaf{i // fab.nodes_per_leaf + 1}"
    host_gbps = 0.0
    if hosts:
        host_gbps = sum(rate for _n, rate, _c, _x in host_ports(topo, hosts[0]))
    if fab.kind == "leaf_spine" and host_gbps:
        for leaf in set(leaf_of.values()):
            members = sum(1 for h in leaf_of.values() if h == leaf)
            if fab.uplink_rate is not None:
                uplink[leaf] = float(fab.uplink_rate) * (fab.spines or 1)
            elif fab.oversubscription > 1:
                uplink[leaf] = members * host_gbps / fab.oversubscription
    pairs = {leaf: max(1, math.floor(gbps / host_gbps + 1e-9)) for leaf, gbps in uplink.items() if host_gbps}
    # a leaf whose uplink carries every host below it at full rate needs no limit
    members = {leaf: sum(1 for v in leaf_of.values() if v == leaf) for leaf in pairs}
    pairs = {leaf: n for leaf, n in pairs.items() if n < members[leaf]}
    return {"source": str(spec), "leaf_of": leaf_of, "uplink_pairs": pairs,
            "uplink_gbps": {k: round(v, 6) for k, v in uplink.items()}, "host_gbps": round(host_gbps, 6)}


def _short(host: str) -> str:
    return host.split(".")[0]


def leaves_for(nodes: list[str], fmap: dict | None) -> list[str | None]:
    """Each node's leaf (by exact or short host name); None when the map does not know it."""
    if not fmap:
        return [None] * len(nodes)
    leaf_of = fmap.get("leaf_of") or {}
    short = {_short(h): leaf for h, leaf in leaf_of.items()}
    return [leaf_of.get(n, short.get(_short(n))) for n in nodes]


def crossings(pair: tuple[int, int], leaves: list[str | None]) -> list[str]:
    """The leaves whose uplink this pair crosses: both ends' leaves when they differ (and are known)."""
    la, lb = leaves[pair[0]], leaves[pair[1]]
    if la is None or lb is None or la == lb:
        return []
    return [la, lb]


def fit_rounds(rounds: list[list[tuple[int, int]]], leaves: list[str | None],
               limit: dict[str, int]) -> list[list[tuple[int, int]]]:
    """Re-pack pairs so that no round has more than limit[leaf] cross-leaf pairs over any leaf's uplink (and
    every round stays node-disjoint). Pairs keep their order; each goes into the first round with room."""
    if not limit:
        return rounds
    out: list[list[tuple[int, int]]] = []
    busy: list[set[int]] = []
    load: list[dict[str, int]] = []
    for pair in (p for r in rounds for p in r):
        over = crossings(pair, leaves)
        for i, nodes in enumerate(busy):
            if pair[0] in nodes or pair[1] in nodes:
                continue
            if any(load[i].get(leaf, 0) + 1 > limit.get(leaf, 10**9) for leaf in over):
                continue
            break
        else:
            out.append([])
            busy.append(set())
            load.append({})
            i = len(out) - 1
        out[i].append(pair)
        busy[i].update(pair)
        for leaf in over:
            load[i][leaf] = load[i].get(leaf, 0) + 1
    return [sorted(r) for r in out]


def round_sharing(pairs: list[tuple[int, int]], leaves: list[str | None]) -> dict[tuple[int, int], dict]:
    """Per pair of one round: {"uplinks": leaves it crosses, "uplink_pairs": the most pairs of this round on
    one of those uplinks (itself included; 0 when it crosses none), "shared_with": the other pairs on them}."""
    on: dict[str, list[tuple[int, int]]] = {}
    for p in pairs:
        for leaf in crossings(p, leaves):
            on.setdefault(leaf, []).append(p)
    out = {}
    for p in pairs:
        over = crossings(p, leaves)
        others = sorted({q for leaf in over for q in on[leaf] if q != p})
        out[tuple(p)] = {"uplinks": over, "uplink_pairs": max((len(on[leaf]) for leaf in over), default=0),
                         "shared_with": others}
    return out
