"""Localization quality of `fabricbench analyze` on simulated fabrics that behave like real ones (issue 9).

Fabric: N hosts on leaves of 16 (default 128 hosts, 8 leaves, 4 spines), all-pairs sweep (circle method, both
directions, 2 sizes, 2 repeats of the same schedule). Every scenario has heavy-tailed noise (Student-t, 3 d.o.f.)
at the given CV, 1% transient dips of single measurements (bandwidth and latency rows), 0.2% transient pair
failures, and one of two fabrics:

  nonblocking   1:1 leaves, adaptive routing
  oversub-static 2:1 oversubscribed leaves, static ECMP routing over the spines (hash collisions recur for a
                pair whenever the schedule repeats); the analyzer is given the topology (leaves, spines, 2:1)
  oversub-static-fitted  the same fabric with the rounds fitted to the uplinks (at most uplink capacity / host
                rate cross-leaf pairs per leaf and round), as `sweep pairwise` schedules with a topology

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
import dataclasses
import json
import shutil
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
           "oversub-static": dict(oversubscription=2.0, routing="static"),
           # the same fabric swept as `sweep pairwise` does with its topology: rounds fitted to the uplinks
           "oversub-static-fitted": dict(oversubscription=2.0, routing="static", pattern="fitted")}


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


def resolvable(f: Fault, size: float, res, leaf_of: dict[str, str]) -> bool:
    """A fault on one path alone is resolvable when it is at least as deep as the single-path resolution the
    analysis reports for that path (its class's, or the retest's where the path ran in the retest); other
    kinds have many partners or rounds and are always counted."""
    if f.kind != "pair":
        return True
    a, b = f.target.split("->")
    rows = {x["class"]: x for x in res.counts.get("single_path_resolution", [])}
    retested = any((x["src"], x["dst"]) == (a, b) and x["retested"] for x in res.suspect_paths)
    row = rows.get("retested") if retested else rows.get("intra-leaf" if leaf_of[a] == leaf_of[b] else "inter-leaf")
    return bool(row and row["resolvable_pct"] is not None and 100 * size >= row["resolvable_pct"])


def run_one(tmp: Path, k: int, spec: SimSpec, fabric_kw: dict, spines: int):
    out, truth = write(spec, tmp / f"s{k}")
    fab = fabric_from_leaves(truth["leaves"], spines=spines, oversubscription=fabric_kw["oversubscription"])
    t = time.time()
    res = analyze(load(out), fab)
    dt = time.time() - t
    shutil.rmtree(out, ignore_errors=True)
    return res, dt, truth


class Tally:
    """One stage's counts: healthy exit 0, recall (all injected, and observable), precision."""

    def __init__(self):
        self.healthy = defaultdict(lambda: [0, 0])  # (noise, fabric) -> [exit0, runs]
        self.recall = defaultdict(lambda: [0, 0])  # (noise, fabric, kind, size) -> [found, injected]
        # a fault slower than what contention leaves its flows changes no noise-free rate by 5% (simulate's
        # fault_effect): no tool could see it; counted apart as masked
        self.visible = defaultdict(lambda: [0, 0])  # (noise, fabric, kind, size) -> [found, observable]
        # observable and at least as deep as the single-path resolution the analysis reports (pair faults)
        self.resolved = defaultdict(lambda: [0, 0])  # (noise, fabric, kind, size) -> [found, resolvable]
        self.prec = defaultdict(lambda: [0, 0])  # (noise, fabric) -> [right, verdicts]
        self.prec_kind = defaultdict(lambda: [0, 0])
        self.wrong: list[str] = []
        self.missed: list[str] = []

    def healthy_run(self, key, res, label):
        self.healthy[key][0] += res.exit_code == 0
        self.healthy[key][1] += 1
        for v in res.faults():
            self.prec[key][1] += 1
            self.prec_kind[v.kind][1] += 1
            if len(self.wrong) < 30:
                self.wrong.append(f"healthy {label}: {v.kind} {v.component} conf {v.confidence:.2f} "
                                  f"-{v.deficit_pct:.0f}%")

    def faulty_run(self, key, size, f: Fault, res, truth, label):
        hit = any(match(f, v) for v in res.faults())
        observable = truth["fault_effect"]["measurements_5pct"] > 0
        self.recall[key + (f.kind, size)][0] += hit
        self.recall[key + (f.kind, size)][1] += 1
        self.visible[key + (f.kind, size)][0] += hit and observable
        self.visible[key + (f.kind, size)][1] += observable
        deep = observable and resolvable(f, size, res, truth["leaves"])
        self.resolved[key + (f.kind, size)][0] += hit and deep
        self.resolved[key + (f.kind, size)][1] += deep
        if not hit and len(self.missed) < 30:
            self.missed.append(f"{label}: {f.kind} {f.target} -{size:.0%}"
                               + ("" if observable else " (masked: changes no rate by 5%)")
                               + (" (shallower than the single-path resolution)" if observable and not deep else ""))
        for v in res.faults():
            right = match(f, v)
            self.prec[key][0] += right
            self.prec[key][1] += 1
            self.prec_kind[v.kind][0] += right
            self.prec_kind[v.kind][1] += 1
            if not right and len(self.wrong) < 30:
                self.wrong.append(f"{label} ({f.kind} {f.target} -{size:.0%}): {v.kind} {v.component} "
                                  f"conf {v.confidence:.2f}")

    def summary(self) -> dict:
        return {
            "healthy_exit0": [{"noise": n, "fabric": f, "exit0": a, "runs": b, "rate": a / b}
                              for (n, f), (a, b) in sorted(self.healthy.items())],
            "precision": [{"noise": n, "fabric": f, "right": a, "verdicts": b, "precision": a / b if b else None}
                          for (n, f), (a, b) in sorted(self.prec.items())],
            "precision_by_verdict_kind": {kk: {"right": a, "verdicts": b} for kk, (a, b) in sorted(self.prec_kind.items())},
            "recall": [{"noise": n, "fabric": f, "kind": kk, "size": s, "found": a, "injected": b, "recall": a / b,
                        "observable": self.visible[(n, f, kk, s)][1], "found_observable": self.visible[(n, f, kk, s)][0],
                        "resolvable": self.resolved[(n, f, kk, s)][1], "found_resolvable": self.resolved[(n, f, kk, s)][0]}
                       for (n, f, kk, s), (a, b) in sorted(self.recall.items())],
            "false_verdicts": self.wrong, "missed": self.missed,
        }


def markdown(stage: dict, title: str) -> str:
    cols = sorted({(r["noise"], r["fabric"]) for r in stage["recall"]} | {(r["noise"], r["fabric"]) for r in stage["healthy_exit0"]})
    name = {"nonblocking": "non-blocking", "oversub-static": "2:1 static", "oversub-static-fitted": "2:1 static, fitted"}
    head = "| | " + " | ".join(f"{100 * n:.0f}% {name.get(f, f)}" for n, f in cols) + " |"
    lines = [f"### {title}", "", head, "|---" * (len(cols) + 1) + "|"]
    frac = lambda a, b: f"{a}/{b} = {a / b:.2f}" if b else "-"  # noqa: E731
    h = {(r["noise"], r["fabric"]): r for r in stage["healthy_exit0"]}
    lines.append("| healthy runs exit 0 | " + " | ".join(f"{h[c]['exit0']}/{h[c]['runs']}" if c in h else "-" for c in cols) + " |")
    p = {(r["noise"], r["fabric"]): r for r in stage["precision"]}
    lines.append("| precision (all verdicts >= 0.5) | " + " | ".join(frac(p[c]["right"], p[c]["verdicts"]) if c in p else "-" for c in cols) + " |")
    cells = defaultdict(dict)
    tot = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for r in stage["recall"]:
        cells[(r["kind"], r["size"])][(r["noise"], r["fabric"])] = r
        t = tot[(r["noise"], r["fabric"])]
        t[0] += r["found"]
        t[1] += r["injected"]
        t[2] += r["found_observable"]
        t[3] += r["observable"]
        t[4] += r["found_resolvable"]
        t[5] += r["resolvable"]
    for (kind, size), row in sorted(cells.items()):
        out = []
        for c in cols:
            r = row.get(c)
            if r is None:
                out.append("-")
                continue
            masked = r["injected"] - r["observable"]
            shallow = r["observable"] - r["resolvable"]
            out.append(f"{r['found']}/{r['injected']}" + (f" ({masked} masked)" if masked else "")
                       + (f" ({shallow} unresolvable)" if shallow else ""))
        lines.append(f"| {kind} -{size:.0%} | " + " | ".join(out) + " |")
    lines.append("| recall, faults >= 15% | " + " | ".join(frac(tot[c][0], tot[c][1]) for c in cols) + " |")
    lines.append("| recall, observable faults | " + " | ".join(frac(tot[c][2], tot[c][3]) for c in cols) + " |")
    lines.append("| recall, observable and resolvable | " + " | ".join(frac(tot[c][4], tot[c][5]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=128)
    ap.add_argument("--per-leaf", type=int, default=16)
    ap.add_argument("--spines", type=int, default=4)
    ap.add_argument("--healthy", type=int, default=20, help="healthy scenarios per noise level and fabric")
    ap.add_argument("--per-cell", type=int, default=4, help="scenarios per fault kind, size, noise level, fabric")
    ap.add_argument("--noise", default="0.03,0.18")
    ap.add_argument("--fabrics", default=",".join(FABRICS), help="which of " + ", ".join(FABRICS))
    ap.add_argument("--kinds", default=",".join(KINDS), help="fault kinds, of " + ", ".join(KINDS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--retest-top", type=int, default=64, help="second stage: the analysis's N most suspect paths "
                    "measured again (0: one stage only)")
    ap.add_argument("--retest-rounds", type=int, default=4, help="... each in this many more rounds")
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    leaves = args.nodes // args.per_leaf
    k = 0
    stages = {"sweep": Tally(), "retest": Tally()}
    times = []
    t0 = time.time()

    def both(tmp, spec, fkw, on_result):
        nonlocal k
        res, dt, truth = run_one(tmp, k, spec, fkw, args.spines)
        k += 1
        times.append(dt)
        on_result(stages["sweep"], res, truth)
        if args.retest_top > 0:
            sus = res.retest_paths()[:args.retest_top]  # what `sweep pairwise --retest-rounds` reruns
            spec2 = dataclasses.replace(spec, retest=sus, retest_rounds=args.retest_rounds if sus else 0)
            res2, _dt, truth2 = run_one(tmp, -k, spec2, fkw, args.spines)  # same seed: the same sweep plus the retest
            on_result(stages["retest"], res2, truth2)

    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        noises = [float(x) for x in args.noise.split(",")]
        chosen = args.fabrics.split(",")
        # the first two fabrics by noise level, then the fitted one (seeds stay those of earlier runs)
        cells = [(x, f) for x in noises for f in chosen if f != "oversub-static-fitted"]
        cells += [(x, f) for x in noises for f in chosen if f == "oversub-static-fitted"]
        for noise, fname in cells:
            fkw = FABRICS[fname]
            base = dict(nodes=args.nodes, leaves=leaves, spines=args.spines, noise=noise, heavy=True,
                        dips=0.01, failures=0.002, repeats=args.repeats, **fkw)
            key = (noise, fname)
            for _ in range(args.healthy):
                spec = SimSpec(seed=args.seed + k, **base)
                label = f"noise {noise} {fname} seed {spec.seed}"
                both(tmp, spec, fkw, lambda t, res, truth, label=label: t.healthy_run(key, res, label))
            for kind in args.kinds.split(","):
                for size in SIZES:
                    for _ in range(args.per_cell):
                        spec = SimSpec(seed=args.seed + k, **base)
                        f = fault(rng, kind, size, spec.hosts(), spec.leaves_map())
                        spec.faults = [f]
                        label = f"noise {noise} {fname} seed {spec.seed}"
                        both(tmp, spec, fkw, lambda t, res, truth, f=f, size=size, label=label:
                             t.faulty_run(key, size, f, res, truth, label))
    summary = {
        "nodes": args.nodes, "leaves": leaves, "spines": args.spines, "repeats": args.repeats,
        "retest": {"top": args.retest_top, "rounds": args.retest_rounds},
        "analysis_seconds_median": float(np.median(times)) if times else None, "elapsed_s": time.time() - t0,
        **stages["sweep"].summary(),
    }
    if args.retest_top > 0:
        summary["with_retest"] = stages["retest"].summary()
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "analyze-localization.json").write_text(text + "\n")
        md = [f"# fabricbench analyze: localization quality (benchmarks/analyze_localization.py)", "",
              f"`python benchmarks/analyze_localization.py {' '.join(sys.argv[1:])}` "
              f"({summary['elapsed_s']:.0f} s on 2 shared cores; median analysis {summary['analysis_seconds_median']:.2f} s "
              "per scenario). Verdicts counted at confidence >= 0.5 (what makes the exit code 1). A fault is masked "
              "when it lowers no noise-free rate by 5% (slower than what contention leaves its flows). A fault on one path "
              "is unresolvable when it is shallower than the single-path resolution the analysis reports for that path "
              "(how low each of its rounds must read to stand out among the paths tested, from its rounds and its "
              "class's noise).", "",
              markdown(summary, "One sweep")]
        if args.retest_top > 0:
            md += [markdown(summary["with_retest"], f"The sweep, then its {args.retest_top} most suspect paths "
                                                    f"in {args.retest_rounds} more rounds each, as `sweep pairwise "
                                                    f"--retest --retest-rounds {args.retest_rounds}` chooses them")]
        for name, st in (("one sweep", summary), ("with the retest", summary.get("with_retest"))):
            if not st:
                continue
            md += [f"False verdicts ({name}):", ""] + [f"- {x}" for x in st["false_verdicts"]] + [""]
            md += [f"Missed ({name}, the first 30):", ""] + [f"- {x}" for x in st["missed"]] + [""]
        (out / "analyze-localization.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
