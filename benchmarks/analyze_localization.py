"""Localization quality of `fabricbench analyze` on simulated fabrics (issue 5 benchmark).

Seeded scenarios on a 256-node leaf/spine fabric (16 leaves x 16 nodes, 8 GPUs per node), all-pairs sweep
(both directions, 2 sizes), 3% noise (heavy-tailed, correlated within a round, intermittent dips). Each scenario
injects 1-4 non-overlapping faults of random kinds (nic, pair, uplink, gpu, nvlink) at a random degradation.
Verdicts at confidence >= 0.5 (the exit-code threshold) are matched to the injected faults:

  nic  host H        <- verdict kind nic/node naming H
  pair A->B          <- verdict kind link naming A->B (or A<->B)
  uplink leaf L      <- verdict kind uplink on L
  gpu / nvlink H:G   <- verdict kind gpu / nvlink naming H:GPU G

Reported: recall per fault kind and degradation, precision (per verdict kind and overall), the smallest
degradation found reliably (recall >= 0.98 with precision >= 0.98), and calibration (how often verdicts in each
confidence band are right). Usage: python benchmarks/analyze_localization.py [--scenarios N] [--out DIR]
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

from fabricbench.analyze.analysis import Thresholds, analyze  # noqa: E402
from fabricbench.analyze.importers import load  # noqa: E402
from fabricbench.analyze.simulate import Fault, SimSpec, write  # noqa: E402
from fabricbench.analyze.topo_adapter import fabric_from_leaves  # noqa: E402

KINDS = ["nic", "pair", "uplink", "gpu", "nvlink"]
DEGRADATIONS = [0.05, 0.10, 0.15, 0.20, 0.30, 0.50]


def scenario(rng: np.random.Generator, nodes: int, leaves: int, gpus: int, kinds: list[str],
             degradations: list[float]) -> list[Fault]:
    width = max(4, len(str(nodes)))
    hosts = [f"node{i + 1:0{width}d}" for i in range(nodes)]
    per = nodes // leaves
    leaf_of = {h: f"leaf{i // per + 1}" for i, h in enumerate(hosts)}
    used_hosts: set[str] = set()
    used_leaves: set[str] = set()
    faults = []
    for _ in range(int(rng.integers(1, 5))):
        kind = kinds[int(rng.integers(len(kinds)))]
        deg = degradations[int(rng.integers(len(degradations)))]
        free = [h for h in hosts if h not in used_hosts and leaf_of[h] not in used_leaves]
        if kind == "uplink":
            leaf = f"leaf{int(rng.integers(leaves)) + 1}"
            if leaf in used_leaves or any(leaf_of[h] == leaf for h in used_hosts):
                continue
            used_leaves.add(leaf)
            faults.append(Fault("uplink", leaf, 1 - deg))
        elif kind == "pair":
            a, b = rng.choice(len(free), 2, replace=False)
            a, b = free[a], free[b]
            used_hosts |= {a, b}
            faults.append(Fault("pair", f"{a}->{b}", 1 - deg))
        elif kind == "nic":
            h = free[int(rng.integers(len(free)))]
            used_hosts.add(h)
            faults.append(Fault("nic", h, 1 - deg))
        elif kind in ("gpu", "nvlink"):
            h = hosts[int(rng.integers(nodes))]
            g = int(rng.integers(gpus))
            if any(f.kind in ("gpu", "nvlink") and f.target == h for f in faults):
                continue
            if kind == "gpu":
                faults.append(Fault("gpu", h, 1 - max(deg, 0.15), gpu=g))
            else:
                links = int(rng.integers(1, 3))
                faults.append(Fault("nvlink", h, (18 - links) / 18, gpu=g))
    return faults


def match(truth: Fault, v) -> bool:
    if truth.kind == "nic":
        return v.kind in ("nic", "node") and (v.component == truth.target or v.component.startswith(truth.target + ":"))
    if truth.kind == "pair":
        a, b = truth.target.split("->")
        return v.kind == "link" and v.component in (f"{a}->{b}", f"{a}<->{b}", f"{b}<->{a}")
    if truth.kind == "uplink":
        return v.kind == "uplink" and v.identifiers.get("switch") == truth.target
    if truth.kind in ("gpu", "nvlink"):
        return v.kind == truth.kind and v.component == f"{truth.target}:GPU{truth.gpu}"
    return False


def degradation(f: Fault) -> float:
    return round(1 - f.factor, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=256)
    ap.add_argument("--leaves", type=int, default=16)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--noise", type=float, default=0.03)
    ap.add_argument("--intermittent", type=float, default=0.001)
    ap.add_argument("--pattern", default="all")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--min-confidence", type=float, default=0.5)
    ap.add_argument("--pair-sigmas", type=float, default=None, help="override Thresholds.pair_sigmas")
    ap.add_argument("--kinds", default=",".join(KINDS), help="fault kinds to draw from")
    ap.add_argument("--out", default=None, help="write DIR/analyze-localization.json and .md")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    found = defaultdict(lambda: [0, 0])  # (kind, deg) -> [detected, total]
    verdict_ok = defaultdict(lambda: [0, 0])  # verdict kind -> [correct, total]
    calib = defaultdict(lambda: [0, 0])  # confidence band -> [correct, total]
    wrong_examples = []
    missed_examples = []
    t0 = time.time()
    analysis_s = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.scenarios):
            faults = scenario(rng, args.nodes, args.leaves, args.gpus, args.kinds.split(","), DEGRADATIONS)
            spec = SimSpec(nodes=args.nodes, leaves=args.leaves, gpus=args.gpus, pattern=args.pattern,
                           noise=args.noise, intermittent=args.intermittent, seed=args.seed + k, faults=faults,
                           repeats=args.repeats)
            out, truth = write(spec, Path(tmp) / f"s{k}")
            t = time.time()
            th = Thresholds() if args.pair_sigmas is None else Thresholds(pair_sigmas=args.pair_sigmas)
            res = analyze(load(out), fabric_from_leaves(truth["leaves"]), thresholds=th)
            analysis_s.append(time.time() - t)
            for f in faults:
                hit = any(match(f, v) for v in res.verdicts if v.confidence >= args.min_confidence)
                found[(f.kind, degradation(f))][0] += hit
                found[(f.kind, degradation(f))][1] += 1
                if not hit and len(missed_examples) < 20:
                    missed_examples.append(f"seed {args.seed + k}: {f.kind} {f.target} gpu={f.gpu} -{degradation(f):.0%}")
            for v in res.verdicts:
                right = any(match(f, v) for f in faults)
                band = min(int(v.confidence * 10), 9) / 10
                calib[band][0] += right
                calib[band][1] += 1
                if v.confidence < args.min_confidence:
                    continue
                verdict_ok[v.kind][0] += right
                verdict_ok[v.kind][1] += 1
                if not right and len(wrong_examples) < 20:
                    wrong_examples.append(f"seed {args.seed + k}: {v.kind} {v.component} conf {v.confidence:.2f} "
                                          f"-{v.deficit_pct:.0f}% (injected: {[(f.kind, f.target, f.gpu) for f in faults]})")
            shutil_rm(out)
    elapsed = time.time() - t0
    rows = []
    for (kind, deg), (hit, tot) in sorted(found.items()):
        rows.append({"kind": kind, "degradation": deg, "detected": hit, "injected": tot, "recall": hit / tot})
    prec = {k: {"correct": c, "verdicts": t, "precision": c / t if t else None} for k, (c, t) in sorted(verdict_ok.items())}
    all_c = sum(c for c, _ in verdict_ok.values())
    all_t = sum(t for _, t in verdict_ok.values())
    cal = [{"confidence_band": f"{b:.1f}-{b + 0.1:.1f}", "correct": c, "verdicts": t, "right_fraction": c / t}
           for b, (c, t) in sorted(calib.items())]
    hi = [(c, t) for b, (c, t) in calib.items() if b >= 0.9]
    hi_c, hi_t = sum(c for c, _ in hi), sum(t for _, t in hi)
    by_deg = defaultdict(lambda: [0, 0])
    for r in rows:
        by_deg[r["degradation"]][0] += r["detected"]
        by_deg[r["degradation"]][1] += r["injected"]
    big = [(r["detected"], r["injected"]) for r in rows if r["degradation"] >= 0.15]
    recall15 = sum(a for a, _ in big) / max(1, sum(b for _, b in big))
    reliable = {}
    for kind in KINDS:
        ok = [r["degradation"] for r in rows if r["kind"] == kind and r["recall"] >= 0.98]
        bad_above = [r["degradation"] for r in rows if r["kind"] == kind and r["recall"] < 0.98]
        cands = [d for d in sorted(ok) if not any(b >= d for b in bad_above)]
        reliable[kind] = cands[0] if cands else None
    summary = {"scenarios": args.scenarios, "nodes": args.nodes, "leaves": args.leaves, "gpus": args.gpus,
               "noise": args.noise, "intermittent": args.intermittent, "pattern": args.pattern,
               "repeats": args.repeats, "min_confidence": args.min_confidence, "kinds": args.kinds,
               "pair_sigmas": args.pair_sigmas or Thresholds().pair_sigmas,
               "precision": all_c / all_t if all_t else None, "verdicts": all_t,
               "recall_faults_ge_15pct": recall15, "recall_by_degradation": {str(d): a / b for d, (a, b) in sorted(by_deg.items())},
               "smallest_reliable_degradation": reliable,
               "calibration_conf_ge_0.9": {"right": hi_c, "verdicts": hi_t, "fraction": hi_c / hi_t if hi_t else None},
               "recall": rows, "precision_by_kind": prec, "calibration": cal,
               "analysis_seconds_median": float(np.median(analysis_s)), "elapsed_s": elapsed,
               "false_verdict_examples": wrong_examples, "missed_examples": missed_examples}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "analyze-localization.json").write_text(text + "\n")
    return 0


def shutil_rm(path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
