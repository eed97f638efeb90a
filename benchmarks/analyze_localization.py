"""Localization quality of `fabricbench analyze` on simulated fabrics that behave like real ones (issue 9).

Fabric: N hosts on leaves of 16 (default 128 hosts, 8 leaves, 4 spines), all-pairs sweep (circle method, both
directions, 2 sizes, 2 repeats of the same schedule). Every scenario has heavy-tailed noise (Student-t, 3 d.o.f.)
at the given CV, 1% transient dips of single measurements (bandwidth and latency rows), 0.2% transient pair
failures, and one of two fabrics:

  nonblocking   1:1 leaves, adaptive routing
  oversub-static 2:1 oversubscribed leaves, static ECMP routing over the spines (hash collisions recur for a
                pair whenever the schedule repeats); the analyzer is given the topology (leaves, spines, 2:1)

Healthy scenarios count exit 0. Faulty scenarios inject one fault of a kind and size:
  nic (both directions), nic-rx, nic-tx, flap (NIC at FACTOR in 30% of rounds), pair (directed), uplink (a leaf's)
A fault that lowers no noise-free rate by 5% (a slow pair or NIC still faster than the share contention leaves
its flows) is masked: counted in recall, and apart as not observable.
Matching: host faults <- verdict nic/node naming the host; pair <- link naming A->B (or A<->B); uplink <- an
uplink verdict on that leaf. Precision counts every verdict at confidence >= 0.5 (latency, failed pairs, links:
all of them). Usage: python benchmarks/analyze_localization.py [--healthy N] [--per-cell N] [--noise 0.03,0.18]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabricbench.analyze.analysis import analyze  # noqa: E402
from fabricbench.analyze.importers import load  # noqa: E402
from fabricbench.analyze.simulate import Fault, SimSpec, write  # noqa: E402
from fabricbench.analyze.topo_adapter import fabric_from_leaves  # noqa: E402

KINDS = ["nic", "nic-rx", "nic-tx", "flap", "pair", "uplink"]
SIZES = [0.15, 0.3, 0.5]
FABRICS = {"nonblocking": dict(oversubscription=1.0, routing="adaptive"),
           "oversub-static": dict(oversubscription=2.0, routing="static")}


def match(truth: Fault, v) -> bool:
    if truth.kind in ("nic", "nic-rx", "nic-tx", "flap"):
        return v.kind in ("nic", "node") and (v.component == truth.target or v.component.startswith(truth.target + ":"))
    if truth.kind == "pair":
        a, b = truth.target.split("->")
        return v.kind == "link" and v.component in (f"{a}->{b}", f"{a}<->{b}", f"{b}<->{a}")
    if truth.kind == "uplink":
        return v.kind == "uplink" and (v.identifiers.get("switch") == truth.target
                                       or v.component.startswith(truth.target + " "))
    return False


def fault(rng, kind: str, size: float, hosts: list[str], leaf_of: dict[str, str]) -> Fault:
    if kind == "uplink":
        return Fault("uplink", sorted(set(leaf_of.values()))[int(rng.integers(len(set(leaf_of.values()))))], 1 - size)
    if kind == "pair":
        a, b = rng.choice(len(hosts), 2, replace=False)
        return Fault("pair", f"{hosts[a]}->{hosts[b]}", 1 - size)
    return Fault(kind, hosts[int(rng.integers(len(hosts)))], 1 - size)


def run_one(tmp: Path, k: int, spec: SimSpec, fabric_kw: dict, spines: int):
    out, truth = write(spec, tmp / f"s{k}")
    run_one.truth = truth
    fab = fabric_from_leaves(truth["leaves"], spines=spines, oversubscription=fabric_kw["oversubscription"])
    t = time.time()
    res = analyze(load(out), fab)
    dt = time.time() - t
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return res, dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=128)
    ap.add_argument("--per-leaf", type=int, default=16)
    ap.add_argument("--spines", type=int, default=4)
    ap.add_argument("--healthy", type=int, default=20, help="healthy scenarios per noise level and fabric")
    ap.add_argument("--per-cell", type=int, default=4, help="scenarios per fault kind, size, noise level, fabric")
    ap.add_argument("--noise", default="0.03,0.18")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    leaves = args.nodes // args.per_leaf
    k = 0
    healthy = defaultdict(lambda: [0, 0])  # (noise, fabric) -> [exit0, runs]
    recall = defaultdict(lambda: [0, 0])  # (noise, fabric, kind, size) -> [found, injected]
    # a fault slower than what contention leaves its flows changes no noise-free rate by 5% (simulate's
    # fault_effect): no tool could see it; counted apart as masked
    visible = defaultdict(lambda: [0, 0])  # (noise, fabric, kind, size) -> [found, observable]
    prec = defaultdict(lambda: [0, 0])  # (noise, fabric) -> [right, verdicts]
    prec_kind = defaultdict(lambda: [0, 0])
    wrong, missed, times = [], [], []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        for noise in [float(x) for x in args.noise.split(",")]:
            for fname, fkw in FABRICS.items():
                base = dict(nodes=args.nodes, leaves=leaves, spines=args.spines, noise=noise, heavy=True,
                            dips=0.01, failures=0.002, repeats=args.repeats, **fkw)
                for _ in range(args.healthy):
                    spec = SimSpec(seed=args.seed + k, **base)
                    res, dt = run_one(tmp, k, spec, fkw, args.spines)
                    k += 1
                    times.append(dt)
                    healthy[(noise, fname)][0] += res.exit_code == 0
                    healthy[(noise, fname)][1] += 1
                    for v in res.faults():
                        prec[(noise, fname)][1] += 1
                        prec_kind[v.kind][1] += 1
                        if len(wrong) < 30:
                            wrong.append(f"healthy noise {noise} {fname} seed {spec.seed}: {v.kind} {v.component} "
                                         f"conf {v.confidence:.2f} -{v.deficit_pct:.0f}%")
                for kind in KINDS:
                    for size in SIZES:
                        for _ in range(args.per_cell):
                            spec = SimSpec(seed=args.seed + k, **base)
                            leaf_of = spec.leaves_map()
                            f = fault(rng, kind, size, spec.hosts(), leaf_of)
                            spec.faults = [f]
                            res, dt = run_one(tmp, k, spec, fkw, args.spines)
                            k += 1
                            times.append(dt)
                            hit = any(match(f, v) for v in res.faults())
                            recall[(noise, fname, kind, size)][0] += hit
                            recall[(noise, fname, kind, size)][1] += 1
                            observable = run_one.truth["fault_effect"]["measurements_5pct"] > 0
                            visible[(noise, fname, kind, size)][0] += hit and observable
                            visible[(noise, fname, kind, size)][1] += observable
                            if not hit and len(missed) < 30:
                                missed.append(f"noise {noise} {fname} seed {spec.seed}: {kind} {f.target} -{size:.0%}"
                                              + ("" if observable else " (masked: changes no rate by 5%)"))
                            for v in res.faults():
                                right = match(f, v)
                                prec[(noise, fname)][0] += right
                                prec[(noise, fname)][1] += 1
                                prec_kind[v.kind][0] += right
                                prec_kind[v.kind][1] += 1
                                if not right and len(wrong) < 30:
                                    wrong.append(f"noise {noise} {fname} seed {spec.seed} ({kind} {f.target} "
                                                 f"-{size:.0%}): {v.kind} {v.component} conf {v.confidence:.2f}")
    summary = {
        "nodes": args.nodes, "leaves": leaves, "spines": args.spines, "repeats": args.repeats,
        "healthy_exit0": [{"noise": n, "fabric": f, "exit0": a, "runs": b, "rate": a / b}
                          for (n, f), (a, b) in sorted(healthy.items())],
        "precision": [{"noise": n, "fabric": f, "right": a, "verdicts": b, "precision": a / b if b else None}
                      for (n, f), (a, b) in sorted(prec.items())],
        "precision_by_verdict_kind": {kk: {"right": a, "verdicts": b} for kk, (a, b) in sorted(prec_kind.items())},
        "recall": [{"noise": n, "fabric": f, "kind": kk, "size": s, "found": a, "injected": b, "recall": a / b,
                    "observable": visible[(n, f, kk, s)][1], "found_observable": visible[(n, f, kk, s)][0]}
                   for (n, f, kk, s), (a, b) in sorted(recall.items())],
        "analysis_seconds_median": float(np.median(times)) if times else None, "elapsed_s": time.time() - t0,
        "false_verdicts": wrong, "missed": missed,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "analyze-localization.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
