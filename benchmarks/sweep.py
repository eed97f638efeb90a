#!/usr/bin/env python3
"""Pairwise sweep on the fabric lab: concurrent rounds against the same pairs run one at a time.

For each node count (default 4 and 8) this brings up a lab (root; `fabricbench lab up`), then submits, as real
Slurm jobs, `fabricbench sweep pairwise` twice, in alternating order over the repeats: concurrent (circle method,
n/2 pairs per round, n-1 rounds) and `--serial` (the same pairs, one per round). It reports

- sweep time: first rank's start record to last rank's 'done' record (the measuring part of the step),
- speedup = serial sweep time / concurrent sweep time (goal: at least n/3),
- fixed cost: sbatch submission to the first rank running (from job.json and the ranks' first records),
- agreement: per pair and direction at the largest size, |concurrent / serial - 1|; goal: the median within 10 %.

Exit status 1 when a goal fails. Results: <out>/sweep-bench.json and <out>/sweep-bench.md.

    sudo python benchmarks/sweep.py --out benchmarks/results/sweep     # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sweep_seconds(out: Path) -> float:
    starts, ends = [], []
    for path in (out / "records").glob("sweep-rank*.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["kind"] == "start":
                starts.append(rec["t_ns"])
            elif rec["kind"] == "done":
                ends.append(rec["t_ns"])
    return (max(ends) - min(starts)) / 1e9


def run_sweep(env: dict, out: Path, nodes: int, serial: bool, args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "fabricbench", "sweep", "pairwise", "--nodes", str(nodes), "--out", str(out),
           "--poll", "0.2", "--quiet", *args] + (["--serial"] if serial else [])
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(f"sweep failed ({res.returncode}): {res.stderr[-2000:]}")
    job = json.loads((out / "job.json").read_text())
    return {"wall_s": wall, "sweep_s": sweep_seconds(out), "fixed_cost_s": job.get("fixed_cost_s"),
            "out": str(out)}


def bandwidths(out: Path) -> dict[tuple, float]:
    from fabricbench.results import read_results

    df = read_results(out)
    big = df[(df["size_bytes"] == df["size_bytes"].max()) & (df["direction"] != "pingpong")]
    return {(tuple(sorted((r.node_a, r.node_b))), r.node_a if r.direction == "a->b" else r.node_b):
            float(r.algbw_gbps) for r in big.itertuples()}


def bench(n: int, leaves: int, rate: str, repeats: int, args: list[str], root: Path) -> dict:
    from fabricbench.lab import manager

    state = Path(f"/var/lib/fabricbench-lab-bench-{os.getpid()}-{n}")
    lab = manager.up(n, leaves, rate, state, 4, install=True, shares=[])
    try:
        env = dict(os.environ, SLURM_CONF=str(lab.conf), FABRICBENCH_LAB_DIR=str(lab.dir))
        runs = {"concurrent": [], "serial": []}
        for rep in range(repeats):
            order = ("concurrent", "serial") if rep % 2 == 0 else ("serial", "concurrent")
            for mode in order:
                out = root / f"n{n}-{mode}-{rep}"
                runs[mode].append(run_sweep(env, out, n, mode == "serial", args))
                print(f"n={n} {mode} repeat {rep}: sweep {runs[mode][-1]['sweep_s']:.1f} s, fixed cost "
                      f"{runs[mode][-1]['fixed_cost_s']:.2f} s", flush=True)
    finally:
        manager.down(state)
    med = {m: statistics.median(r["sweep_s"] for r in runs[m]) for m in runs}
    fixed = [r["fixed_cost_s"] for m in runs for r in runs[m] if r["fixed_cost_s"] is not None]
    conc = [bandwidths(Path(r["out"])) for r in runs["concurrent"]]
    ser = [bandwidths(Path(r["out"])) for r in runs["serial"]]
    devs = []
    for key in conc[0]:
        c = statistics.median(d[key] for d in conc if key in d)
        s = statistics.median(d[key] for d in ser if key in d)
        devs.append(abs(c / s - 1))
    speedup = med["serial"] / med["concurrent"]
    return {
        "nodes": n, "pairs": n * (n - 1) // 2, "rounds_concurrent": n - 1 if n % 2 == 0 else n,
        "rounds_serial": n * (n - 1) // 2, "repeats": repeats,
        "sweep_s_concurrent": med["concurrent"], "sweep_s_serial": med["serial"], "speedup": speedup,
        "goal_speedup": n / 3, "speedup_ok": speedup >= n / 3,
        "fixed_cost_s_median": statistics.median(fixed) if fixed else None,
        "fixed_cost_s_range": [min(fixed), max(fixed)] if fixed else None,
        "agreement_median_pct": 100 * statistics.median(devs), "agreement_max_pct": 100 * max(devs),
        "agreement_ok": statistics.median(devs) <= 0.10,
        "per_pair_concurrent_gbps": statistics.median(v for d in conc for v in d.values()),
        "per_pair_serial_gbps": statistics.median(v for d in ser for v in d.values()),
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="4,8", help="node counts (comma-separated)")
    parser.add_argument("--leaves", type=int, default=2)
    parser.add_argument("--link-rate", default="400mbit")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", default="4M", help="message size (one size)")
    parser.add_argument("--iters", default="5")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sweep"))
    opts = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/sweep.py brings up the fabric lab: run it as root")
    import signal

    # SIGTERM must run the `finally` that takes the lab down, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(KeyboardInterrupt()))
    root = Path(opts.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    args = ["-b", opts.size, "-e", opts.size, "-n", opts.iters, "-w", "2"]
    results = [bench(int(n), opts.leaves, opts.link_rate, opts.repeats, args, root / "runs")
               for n in opts.nodes.split(",")]
    (root / "sweep-bench.json").write_text(json.dumps({"args": vars(opts), "results": results}, indent=1) + "\n")
    lines = ["| nodes | pairs | rounds (concurrent / serial) | sweep time concurrent (s) | serial (s) | speedup | "
             "goal n/3 | fixed cost: submit to first rank (s) | per-pair GB/s concurrent / serial | "
             "deviation concurrent vs serial, median (max) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        fixed = (f"{r['fixed_cost_s_median']:.2f} ({r['fixed_cost_s_range'][0]:.2f}..{r['fixed_cost_s_range'][1]:.2f})"
                 if r["fixed_cost_s_median"] is not None else "n/a")
        lines.append(f"| {r['nodes']} | {r['pairs']} | {r['rounds_concurrent']} / {r['rounds_serial']} | "
                     f"{r['sweep_s_concurrent']:.1f} | {r['sweep_s_serial']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['goal_speedup']:.2f}x {'met' if r['speedup_ok'] else 'FAILED'} | {fixed} | "
                     f"{r['per_pair_concurrent_gbps']:.4f} / {r['per_pair_serial_gbps']:.4f} | "
                     f"{r['agreement_median_pct']:.1f} % ({r['agreement_max_pct']:.1f} %) "
                     f"{'met' if r['agreement_ok'] else 'FAILED'} |")
    table = "\n".join(lines)
    (root / "sweep-bench.md").write_text(table + "\n")
    print(table)
    return 0 if all(r["speedup_ok"] and r["agreement_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
