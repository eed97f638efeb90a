"""Synthetic fabrics with injected faults, written in the normal results format, for tests, demos and benchmarks.

Fabric: N nodes on L leaves (node names node0001..., leaves leaf1...), S spines; optional R rails per node
(one NIC per rail) and G GPUs per node (NVSwitch-style GPU x GPU matrix). Pattern: `all` (circle method:
n-1 rounds of n/2 disjoint pairs, both directions), `fitted` (the circle re-packed so that no round loads a
leaf's uplinks beyond what they carry at full rate, as `sweep pairwise` does with an oversubscribed topology)
or `random-K` (K rounds of a random perfect matching).

Faults (`KIND:TARGET[:FACTOR]`, FACTOR = fraction of the rate left, default 0.5):
  nic:node0005[:0.5]          node's NIC(s) (both directions; `nic:node0005/2` one rail)
  pair:node0001->node0002     one directed pair
  uplink:leaf3                a leaf's uplinks (both directions)
  switch:leaf3                a leaf switch (every path touching it)
  gpu:node0004/3              GPU 3 of node0004 (row and column)
  nvlink:node0004/3[:K]       K NVLinks of 18 down on GPU 3 (default 1: ~5.6%)
  latency:node0006[:3]        the node's pairs take FACTOR times longer to start (latency only)

Noise (`--noise SIGMA`, default 0.03): per-measurement Gaussian log-noise, a heavy tail (1% of measurements
dip by |t3| x 2 SIGMA), a factor shared by every measurement of a round and size (SIGMA/2), and intermittent
faults (`--intermittent P`: a pair loses 20-50% for one round with probability P). Every value is reproducible
from `--seed`. The ground truth goes to `simulation.json` beside the results.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fabricbench.errors import UsageError

INTRA_GBPS = 48.0
INTER_GBPS = 46.0
GPU_GBPS = 370.0
NVLINKS = 18
KINDS = ("nic", "nic-rx", "nic-tx", "flap", "pair", "uplink", "switch", "spine", "gpu", "nvlink", "latency")
FLAP_P = 0.3  # a flapping NIC is down to FACTOR in this share of rounds


@dataclass
class Fault:
    kind: str
    target: str
    factor: float
    rail: int | None = None
    gpu: int | None = None

    def truth(self) -> dict:
        comp = self.target
        if self.kind in ("nic", "nic-rx", "nic-tx", "flap") and self.rail is not None:
            comp = f"{self.target}/{self.rail}"
        if self.kind in ("gpu", "nvlink"):
            comp = f"{self.target}:GPU{self.gpu}"
        return {"kind": self.kind, "component": comp, "host": self.target.split("->")[0] if self.kind not in ("uplink", "switch", "spine") else None,
                "target": self.target, "factor": self.factor, "rail": self.rail, "gpu": self.gpu}


def parse_fault(spec: str) -> Fault:
    parts = spec.split(":")
    if len(parts) < 2:
        raise UsageError(f"--fault {spec!r}: expected KIND:TARGET[:FACTOR] (e.g. nic:node0005:0.6)")
    kind, target = parts[0].strip().lower(), parts[1].strip()
    if kind not in KINDS:
        raise UsageError(f"--fault {spec!r}: unknown kind {kind!r} ({', '.join(KINDS)})")
    factor = 0.5
    if len(parts) > 2:
        try:
            factor = float(parts[2])
        except ValueError:
            raise UsageError(f"--fault {spec!r}: factor {parts[2]!r} is not a number") from None
    rail = gpu = None
    if kind == "nvlink":
        links = int(factor) if len(parts) > 2 else 1
        if not 1 <= links <= NVLINKS:
            raise UsageError(f"--fault {spec!r}: NVLinks down must be 1..{NVLINKS}")
        factor = (NVLINKS - links) / NVLINKS
    elif kind == "latency":
        if len(parts) < 3:
            factor = 3.0
        if factor < 1:
            raise UsageError(f"--fault {spec!r}: a latency factor multiplies latency (>= 1)")
    elif not 0 < factor <= 1:
        raise UsageError(f"--fault {spec!r}: factor must be in (0, 1] (fraction of the rate left)")
    if "/" in target:
        host, idx = target.split("/", 1)
        try:
            number = int(idx)
        except ValueError:
            raise UsageError(f"--fault {spec!r}: {idx!r} is not a rail/GPU index") from None
        target = host
        if kind in ("gpu", "nvlink"):
            gpu = number
        else:
            rail = number
    elif kind in ("gpu", "nvlink"):
        raise UsageError(f"--fault {spec!r}: name the GPU as HOST/INDEX")
    if kind == "pair" and "->" not in target:
        raise UsageError(f"--fault {spec!r}: a pair is SRC->DST")
    return Fault(kind, target, factor, rail, gpu)


@dataclass
class SimSpec:
    nodes: int = 16
    leaves: int = 4
    spines: int = 1
    rails: int = 1
    gpus: int = 0
    pattern: str = "all"
    sizes: list[int] = field(default_factory=lambda: [1 << 28, 1 << 30])
    repeats: int = 1
    noise: float = 0.03
    intermittent: float = 0.0
    seed: int = 0
    faults: list[Fault] = field(default_factory=list)
    names: list[str] | None = None
    leaf_of: dict[str, str] | None = None
    heavy: bool = False  # Student-t (3 d.o.f.) per-measurement noise instead of Gaussian
    dips: float = 0.0  # probability a single measurement dips to 20-70% (OS jitter, a competing job)
    failures: float = 0.0  # probability a pair fails to measure in a round (a timeout), transient
    oversubscription: float = 1.0  # leaf downlink : uplink capacity; concurrent cross-leaf flows share uplinks
    routing: str = "adaptive"  # adaptive (flows share a leaf's uplink bundle) | static (ECMP hash per pair)
    retest: list[tuple[str, str]] = field(default_factory=list)  # pairs measured again after the sweep
    retest_rounds: int = 0  # ... in this many more rounds each (packed: a node in one pair per round)

    def hosts(self) -> list[str]:
        if self.names:
            return list(self.names)
        width = max(4, len(str(self.nodes)))
        return [f"node{i + 1:0{width}d}" for i in range(self.nodes)]

    def leaves_map(self) -> dict[str, str]:
        if self.leaf_of:
            return dict(self.leaf_of)
        hosts = self.hosts()
        per = math.ceil(len(hosts) / max(self.leaves, 1))
        return {h: f"leaf{i // per + 1}" for i, h in enumerate(hosts)}


def _pairs(n: int, pattern: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unordered pairs (a < b not required) and their round."""
    if pattern == "all":
        m = n if n % 2 == 0 else n + 1  # a dummy node when odd
        i, j = np.triu_indices(m, k=1)
        last = m - 1
        rnd = np.where(j == last, (2 * i) % (m - 1), (i + j) % (m - 1))
        keep = (i < n) & (j < n)
        return i[keep], j[keep], rnd[keep]
    if pattern.startswith("random-"):
        try:
            k = int(pattern.split("-", 1)[1])
        except ValueError:
            raise UsageError(f"--pattern {pattern!r}: expected all or random-K") from None
        a_all, b_all, r_all = [], [], []
        for r in range(k):
            perm = rng.permutation(n)
            half = n // 2
            a_all.append(perm[:half])
            b_all.append(perm[half:2 * half])
            r_all.append(np.full(half, r))
        return np.concatenate(a_all), np.concatenate(b_all), np.concatenate(r_all)
    raise UsageError(f"--pattern {pattern!r}: expected all or random-K")


def _fit_to_uplinks(spec: SimSpec, a, b, rnd, hosts: list[str], leaf_map: dict[str, str]):
    """The circle's pairs re-packed as `sweep pairwise` does with an oversubscribed topology (--fit-uplinks, the
    default): no round puts more cross-leaf pairs on a leaf's uplinks than they carry at full host rate."""
    from fabricbench.slurm.fabric_map import fit_rounds

    per_leaf: dict[str, int] = {}
    for h in hosts:
        per_leaf[leaf_map[h]] = per_leaf.get(leaf_map[h], 0) + 1
    limit = {leaf: max(1, int(math.floor(k / spec.oversubscription + 1e-9))) for leaf, k in per_leaf.items()
             if spec.oversubscription > 1.0}
    order = np.argsort(rnd, kind="stable")
    rounds: list[list[tuple[int, int]]] = []
    for i in order:
        while len(rounds) <= rnd[i]:
            rounds.append([])
        rounds[rnd[i]].append((int(a[i]), int(b[i])))
    packed = fit_rounds(rounds, [leaf_map[h] for h in hosts], limit)
    fa = np.array([p[0] for r in packed for p in r], dtype=np.int64)
    fb = np.array([p[1] for r in packed for p in r], dtype=np.int64)
    fr = np.array([k for k, r in enumerate(packed) for _ in r], dtype=np.int64)
    return fa, fb, fr


def _retest_schedule(spec: SimSpec, hi: dict[str, int], first_round: int):
    """The retest pairs, each in `retest_rounds` more rounds after the sweep, scheduled as `sweep pairwise
    --retest-rounds` does (slurm.schedule.repeat_rounds): different co-runners each time, no two pairs of a
    round on the same leaf."""
    from fabricbench.slurm.schedule import repeat_rounds

    pairs = []
    for x, y in spec.retest:
        if x not in hi or y not in hi or x == y:
            raise UsageError(f"retest pair {x}-{y}: no such pair of nodes")
        pairs.append((hi[x], hi[y]))
    leaf_map = spec.leaves_map()
    leaves = [leaf_map[h] for h in spec.hosts()]
    rounds = repeat_rounds(pairs, spec.retest_rounds, seed=spec.seed, leaves=leaves)
    ra = np.array([p[0] for rd in rounds for p in rd], dtype=np.int64)
    rb = np.array([p[1] for rd in rounds for p in rd], dtype=np.int64)
    rr = np.array([first_round + k for k, rd in enumerate(rounds) for _ in rd], dtype=np.int64)
    return ra, rb, rr


def simulate(spec: SimSpec) -> tuple[pd.DataFrame, dict]:
    """The results frame and the ground truth. A retest's rows come after the sweep's, which are exactly those of
    the same spec without the retest (a retest adds measurements, it does not redraw the sweep's)."""
    if not (spec.retest and spec.retest_rounds > 0):
        return _simulate(spec)
    import dataclasses

    sweep, _ = _simulate(dataclasses.replace(spec, retest=[], retest_rounds=0))
    full, truth = _simulate(spec)
    first = int(sweep["round"].max()) + 1
    extra = full[(full["row_kind"] == "pair") & (full["round"] >= first)]
    frame = pd.concat([sweep, extra], ignore_index=True)
    for col in ("run_id", "row_kind", "op", "status", "node_a", "node_b", "direction"):
        if col in frame and isinstance(full[col].dtype, pd.CategoricalDtype):
            frame[col] = frame[col].astype(full[col].dtype)
    truth["retest"] = {"pairs": [list(p) for p in spec.retest], "rounds": spec.retest_rounds}
    return frame, truth


def _simulate(spec: SimSpec) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(spec.seed)
    hosts = spec.hosts()
    n = len(hosts)
    if n < 2:
        raise UsageError("simulate needs at least 2 nodes")
    hi = {h: i for i, h in enumerate(hosts)}
    leaf_map = spec.leaves_map()
    leaf_names = sorted(set(leaf_map.values()), key=lambda s: (len(s), s))
    li = {x: k for k, x in enumerate(leaf_names)}
    leaf = np.array([li[leaf_map[h]] for h in hosts])
    R = max(spec.rails, 1)
    send = np.ones((n, R))
    recv = np.ones((n, R))
    up = np.ones(len(leaf_names))
    sw = np.ones(len(leaf_names))
    pair_f: dict[tuple[int, int], float] = {}
    lat_f = np.ones(n)
    flaps: list[tuple[int, float]] = []
    spine_f = np.ones(max(spec.spines, 1))
    for f in spec.faults:
        if f.kind in ("nic", "nic-rx", "nic-tx", "flap", "gpu", "nvlink", "latency") and f.target not in hi:
            raise UsageError(f"--fault {f.kind}:{f.target}: no such node (nodes {hosts[0]}..{hosts[-1]})")
        if f.kind in ("nic", "nic-rx", "nic-tx"):
            rails = range(R) if f.rail is None else [f.rail]
            if f.rail is not None and not 0 <= f.rail < R:
                raise UsageError(f"--fault nic:{f.target}/{f.rail}: rail out of range (0..{R - 1})")
            for r in rails:
                if f.kind != "nic-rx":
                    send[hi[f.target], r] *= f.factor
                if f.kind != "nic-tx":
                    recv[hi[f.target], r] *= f.factor
        elif f.kind == "flap":
            flaps.append((hi[f.target], f.factor))
        elif f.kind == "spine":
            try:
                k = int(f.target.lower().removeprefix("spine")) - 1
            except ValueError:
                k = -1
            if not 0 <= k < max(spec.spines, 1):
                raise UsageError(f"--fault spine:{f.target}: no such spine (spine1..spine{max(spec.spines, 1)})")
            spine_f[k] *= f.factor
        elif f.kind == "latency":
            lat_f[hi[f.target]] *= f.factor
        elif f.kind == "pair":
            a, b = (x.strip() for x in f.target.split("->"))
            if a not in hi or b not in hi:
                raise UsageError(f"--fault pair:{f.target}: no such node")
            pair_f[(hi[a], hi[b])] = f.factor
        elif f.kind in ("uplink", "switch"):
            if f.target not in li:
                raise UsageError(f"--fault {f.kind}:{f.target}: no such leaf ({', '.join(leaf_names)})")
            (up if f.kind == "uplink" else sw)[li[f.target]] *= f.factor
    a, b, rnd = _pairs(n, "all" if spec.pattern == "fitted" else spec.pattern, rng)
    if spec.pattern == "fitted":
        a, b, rnd = _fit_to_uplinks(spec, a, b, rnd, hosts, leaf_map)
    reps = max(spec.repeats, 1)
    rounds_per_rep = int(rnd.max()) + 1 if len(rnd) else 1
    n0 = len(a)
    # pair instances: the schedule repeated (the same co-runners each time), then any retest rounds of named pairs
    a = np.tile(a, reps)
    b = np.tile(b, reps)
    rnd = np.concatenate([rnd + k * rounds_per_rep for k in range(reps)]) if n0 else rnd
    if spec.retest and spec.retest_rounds > 0:
        ra, rb, rr = _retest_schedule(spec, hi, reps * rounds_per_rep)
        a, b, rnd = np.concatenate([a, ra]), np.concatenate([b, rb]), np.concatenate([rnd, rr])
    N = len(a)
    # both directions: instance k is a->b at index k, b->a at N + k
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    direction = np.concatenate([np.zeros(N, np.int8), np.ones(N, np.int8)])
    rnd = np.concatenate([rnd, rnd])
    node_a = np.concatenate([a, a])
    node_b = np.concatenate([b, b])
    # the same pair in another repeat is the same pair (transients are drawn per pair and round)
    pair_id = np.concatenate([np.tile(np.arange(n0), reps), n0 + np.arange(N - n0 * reps)])
    pair_id = np.concatenate([pair_id, pair_id])
    S = len(spec.sizes)
    # rows: repeat, rail, size, directed pair; then the retest's rail, size, directed pair
    q = np.tile(np.arange(2 * n0), S * R * reps)
    k_rep = np.repeat(np.arange(reps), 2 * n0 * S * R)
    main = np.where(q < n0, k_rep * n0 + q, N + k_rep * n0 + (q - n0))
    extra = np.concatenate([np.arange(n0 * reps, N), N + np.arange(n0 * reps, N)])
    idx_pair = np.concatenate([main, np.tile(extra, S * R)])
    size_i = np.concatenate([np.repeat(np.tile(np.arange(S), R * reps), 2 * n0),
                             np.repeat(np.tile(np.arange(S), R), len(extra))])
    rail_i = np.concatenate([np.repeat(np.tile(np.repeat(np.arange(R), S), reps), 2 * n0),
                             np.repeat(np.repeat(np.arange(R), S), len(extra))])
    total = len(idx_pair)
    s_, d_ = src[idx_pair], dst[idx_pair]
    cross = leaf[s_] != leaf[d_]
    base = np.where(cross, INTER_GBPS, INTRA_GBPS) / R
    factor = np.minimum(send[s_, rail_i], recv[d_, rail_i])
    factor = np.minimum(factor, np.minimum(sw[leaf[s_]], sw[leaf[d_]]))
    factor = np.where(cross, np.minimum(factor, np.minimum(up[leaf[s_]], up[leaf[d_]])), factor)
    if pair_f:
        key = s_.astype(np.int64) * n + d_
        for (x, y), fac in pair_f.items():
            hit = key == x * n + y
            factor[hit] = np.minimum(factor[hit], fac)
    round_all = rnd[idx_pair]
    n_rounds = int(round_all.max()) + 1 if total else 1
    for h, fac in flaps:  # a flapping NIC: some rounds at FACTOR, the rest normal
        bad = rng.random(n_rounds) < FLAP_P
        hit = ((s_ == h) | (d_ == h)) & bad[round_all]
        factor[hit] = np.minimum(factor[hit], fac)
    rate = base * factor
    rate = _flow_model(spec, rate, s_, d_, leaf, cross, round_all, direction[idx_pair], size_i, rail_i, spine_f, R,
                       up)
    # what the faults did to the noise-free rates: a fault slower than the share contention leaves a flow
    # changes nothing any tool could measure (masked), which the ground truth records
    clean = _flow_model(spec, base.copy(), s_, d_, leaf, cross, round_all, direction[idx_pair], size_i, rail_i,
                        np.ones_like(spine_f), R, np.ones_like(up))
    effect = 1.0 - rate / clean
    sigma = spec.noise
    if spec.heavy:
        noise = rng.standard_t(3, total) * sigma / math.sqrt(3)  # same variance, heavy tails
    else:
        noise = rng.standard_normal(total) * sigma
    tail = rng.random(total) < 0.01
    noise[tail] -= np.abs(rng.standard_t(3, tail.sum())) * 2 * sigma
    round_factor = rng.standard_normal((n_rounds, S)) * sigma / 2
    noise += round_factor[round_all, size_i]
    if spec.intermittent > 0:
        # per (pair, round): both directions and every size of that round
        upair = pair_id[idx_pair]
        key = upair.astype(np.int64) * n_rounds + round_all
        uniq, inv = np.unique(key, return_inverse=True)
        hit = rng.random(len(uniq)) < spec.intermittent
        depth = rng.uniform(0.2, 0.5, len(uniq))
        noise += np.where(hit[inv], np.log(1 - depth[inv]), 0.0)
    lat_noise = rng.standard_normal(total) * sigma
    if spec.dips > 0:  # transients hit single measurements of every kind: bandwidth down, latency up
        hit = rng.random(total) < spec.dips
        noise[hit] += np.log(rng.uniform(0.2, 0.7, int(hit.sum())))
        hit = rng.random(total) < spec.dips
        lat_noise[hit] += np.log(rng.uniform(1.5, 6.0, int(hit.sum())))
    bw = rate * np.exp(np.minimum(noise, 3 * sigma))
    status = np.full(total, "ok", dtype=object)
    error = np.full(total, None, dtype=object)
    if spec.failures > 0:  # a pair's measurement fails (timeout) in one round: every size of that round
        upair = pair_id[idx_pair]
        key = upair.astype(np.int64) * n_rounds + round_all
        uniq, inv = np.unique(key, return_inverse=True)
        fail = (rng.random(len(uniq)) < spec.failures)[inv]
        bw = np.where(fail, np.nan, bw)
        status[fail] = "failed"
        error[fail] = "timeout (simulated transient failure)"
    size_arr = np.asarray(spec.sizes, dtype=np.int64)[size_i]
    time_us = size_arr / (bw * 1e3)
    cat_hosts = pd.Categorical.from_codes(np.arange(n), categories=hosts)
    frame = pd.DataFrame({
        "run_id": pd.Categorical(["sim"]).repeat(total) if total else pd.Categorical([]),
        "row_kind": pd.Categorical(["pair"]).repeat(total) if total else pd.Categorical([]),
        "op": pd.Categorical(["p2p_uni"]).repeat(total) if total else pd.Categorical([]),
        "size_bytes": size_arr, "time_us": time_us, "algbw_gbps": bw, "busbw_gbps": bw,
        "latency_us": 2.0 * np.maximum(lat_f[s_], lat_f[d_]) * np.exp(lat_noise),
        "status": pd.Categorical(status, categories=["ok", "failed"]),
        "error": error,
        "round": round_all.astype(np.int64),
        "node_a": pd.Categorical.from_codes(node_a[idx_pair], categories=hosts),
        "node_b": pd.Categorical.from_codes(node_b[idx_pair], categories=hosts),
        "direction": pd.Categorical.from_codes(direction[idx_pair], categories=["a->b", "b->a"]),
        # as `sweep pairwise` records it: the sweep's rounds, then the retest's
        "phase": pd.Categorical.from_codes((round_all >= reps * rounds_per_rep).astype(np.int8),
                                           categories=["sweep", "retest"]),
    })
    del cat_hosts
    if R > 1:
        frame["rail"] = rail_i.astype(np.int64)
        frame["nic"] = pd.Categorical.from_codes(rail_i, categories=[f"mlx5_{r}" for r in range(R)])
    gpu_rows = _gpu_rows(spec, hosts, rng) if spec.gpus else None
    if gpu_rows is not None:
        frame = pd.concat([frame, gpu_rows], ignore_index=True)
    truth = {"nodes": n, "leaves": leaf_map, "spines": spec.spines, "rails": R, "gpus": spec.gpus,
             "pattern": spec.pattern, "sizes": spec.sizes, "repeats": reps, "noise": spec.noise,
             "intermittent": spec.intermittent, "seed": spec.seed, "faults": [f.truth() for f in spec.faults],
             "heavy": spec.heavy, "dips": spec.dips, "failures": spec.failures,
             "oversubscription": spec.oversubscription, "routing": spec.routing,
             "fault_effect": {"max": float(effect.max()) if total else 0.0,
                              "measurements_5pct": int((effect >= 0.05).sum()) if total else 0}}
    return frame, truth


def _flow_model(spec: SimSpec, rate: np.ndarray, s_, d_, leaf, cross, round_all, direction, size_i, rail_i,
                spine_f: np.ndarray, R: int, up: np.ndarray | None = None) -> np.ndarray:
    """Concurrent flows share what the fabric gives them. Flows of one round, direction and size run at once; a
    cross-leaf flow leaves through its leaf's uplinks and enters through the destination leaf's downlinks. Each
    leaf-spine link carries (hosts on the leaf x host rate) / (oversubscription x spines); a degraded spine
    carries less. Adaptive routing spreads a leaf's flows over all its links (one shared bundle); static
    routing hashes each pair onto one spine, so two flows may collide on one link while others idle, and the
    same pair collides again whenever the same schedule repeats. Each flow gets min(its own rate, its fair
    share of every link it uses)."""
    S = max(spec.spines, 1)
    if not cross.any() or (spec.oversubscription <= 1.0 and spec.routing == "adaptive" and np.all(spine_f == 1.0)):
        return rate
    per_leaf = np.bincount(leaf)
    link_cap = per_leaf * INTER_GBPS / R / (spec.oversubscription * S)  # one leaf-spine link, one direction
    if up is not None:
        link_cap = link_cap * up[: len(link_cap)]  # a degraded uplink bundle carries less
    group = ((round_all.astype(np.int64) * 2 + direction) * 64 + size_i) * max(R, 1) + rail_i
    idx = np.flatnonzero(cross)
    ls, ld, g = leaf[s_[idx]], leaf[d_[idx]], group[idx]
    nl = int(leaf.max()) + 1
    if spec.routing == "static":
        # a 5-tuple-like hash of (src, dst, rail), mixed so that a round's structure does not line flows up
        h = (s_[idx].astype(np.uint64) * np.uint64(0x9E3779B1) + d_[idx].astype(np.uint64) * np.uint64(0x85EBCA77)
             + rail_i[idx].astype(np.uint64) * np.uint64(0xC2B2AE3D)) & np.uint64(0xFFFFFFFF)
        h ^= h >> np.uint64(15)
        h = (h * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
        h ^= h >> np.uint64(12)
        spine = (h % np.uint64(S)).astype(np.int64)
        up_key = (g * nl + ls) * S + spine
        dn_key = (g * nl + ld) * S + spine
        cap_up = link_cap[ls] * spine_f[spine]
        cap_dn = link_cap[ld] * spine_f[spine]
    else:
        up_key = g * nl + ls
        dn_key = g * nl + ld
        cap_up = link_cap[ls] * spine_f.sum()
        cap_dn = link_cap[ld] * spine_f.sum()
    _, inv_u, cnt_u = np.unique(up_key, return_inverse=True, return_counts=True)
    _, inv_d, cnt_d = np.unique(dn_key, return_inverse=True, return_counts=True)
    share = np.minimum(cap_up / cnt_u[inv_u], cap_dn / cnt_d[inv_d])
    out = rate.copy()
    out[idx] = np.minimum(rate[idx], share)
    return out


def _gpu_rows(spec: SimSpec, hosts: list[str], rng: np.random.Generator) -> pd.DataFrame:
    G = spec.gpus
    gf: dict[tuple[str, int], float] = {}
    for f in spec.faults:
        if f.kind in ("gpu", "nvlink"):
            if not 0 <= (f.gpu or 0) < G:
                raise UsageError(f"--fault {f.kind}:{f.target}/{f.gpu}: GPU out of range (0..{G - 1})")
            gf[(f.target, f.gpu)] = min(gf.get((f.target, f.gpu), 1.0), f.factor)
    rows = []
    for h in hosts:
        for s in range(G):
            for d in range(G):
                if s == d:
                    continue
                fac = min(gf.get((h, s), 1.0), gf.get((h, d), 1.0))
                bw = GPU_GBPS * fac * math.exp(rng.standard_normal() * 0.003)
                rows.append((h, s, d, bw))
    arr = pd.DataFrame(rows, columns=["host", "src_gpu", "dst_gpu", "gbps"])
    arr["row_kind"] = "gpu_pair"
    arr["op"] = "device_to_device_memcpy_read_ce"
    arr["kind"] = "device_to_device_memcpy_read_ce"
    arr["status"] = "ok"
    arr["run_id"] = "sim"
    arr["size_bytes"] = 1 << 29
    arr["algbw_gbps"] = arr["gbps"]
    return arr


def write(spec: SimSpec, out: str | Path) -> tuple[Path, dict]:
    from fabricbench.results import atomic_write_json, write_results
    from fabricbench.results.schema import to_frame

    frame, truth = simulate(spec)
    if len(frame) <= 1_000_000:
        frame = to_frame(frame)
    else:
        for col in ("row_kind", "op", "status", "run_id", "node_a", "node_b", "direction"):
            if col in frame and not isinstance(frame[col].dtype, pd.CategoricalDtype):
                frame[col] = frame[col].astype("category")
    out = Path(out)
    info = {"run_id": "sim", "status": "ok", "command_line": ["fabricbench", "simulate"], "backend": "simulated",
            "hosts": spec.hosts(), "simulation": truth}
    write_results(out, frame, info)
    atomic_write_json(out / "simulation.json", truth)
    return out, truth
