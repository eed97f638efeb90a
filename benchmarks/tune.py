#!/usr/bin/env python3
"""`fabricbench tune --backend mpi` on the fabric lab: successive halving against an exhaustive search.

On a 4-node lab (root; brought up here unless --state-dir names one that is up), over Open MPI's coll tuned
allreduce algorithms, this runs

1. `tune --exhaustive` (every candidate --repeats times) : the reference,
2. `tune` (successive halving + coordinate descent), with one candidate made to corrupt data
   (allreduce=nonoverlapping, FABRICBENCH_INJECT=corrupt@1) that must be rejected and named,
3. `tune verify` of the halving's directory: default vs the written rules + MCA parameters, interleaved,

and reports per size: the exhaustive best, the halving's pick and whether it is the same or within the
exhaustive interval (95% CI of the ratio from the exhaustive's own paired rounds includes 1); search time of
both (confirmation excluded, then included); the confirmed speed-ups; verify's result.
Results: <out>/tune-bench.json and <out>/tune-bench.md.

    sudo python benchmarks/tune.py --out benchmarks/results/tune     # about 15-25 minutes on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fabricbench.tune.stats import ratio_ci  # noqa: E402


def tune(env, out: Path, launcher: str, sizes: list[str], extra: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "fabricbench", "tune", "all_reduce", "--backend", "mpi", "--launcher", launcher,
           *sizes, "--out", str(out), "--budget", "120m", *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=7200)
    (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode not in (0,):
        raise SystemExit(f"tune failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc, time.monotonic() - t0


def search_seconds(frame: pd.DataFrame, phases) -> float:
    runs = frame[frame.phase.isin(phases)].drop_duplicates("run_dir")
    return float(runs.wall_s.sum())


def compare(exh: pd.DataFrame, halving_summary: dict) -> list[dict]:
    ex = exh[(exh.phase == "exhaustive") & (exh.status == "ok")]
    rows = []
    for d in halving_summary["decisions"]:
        size = d["size_bytes"]
        at = ex[ex.size_bytes == size]
        med = at.groupby("candidate").time_us.median()
        best = med.idxmin()
        pick = d["choice"]
        row = {"size_bytes": size, "exhaustive_best": best, "exhaustive_best_us": float(med[best]), "halving_pick": pick,
               "halving_pick_exhaustive_us": float(med.get(pick, np.nan))}
        if pick == best:
            row["agrees"] = "same"
        elif pick in med:
            b = at[at.candidate == best].set_index("round").time_us
            p = at[at.candidate == pick].set_index("round").time_us
            common = b.index.intersection(p.index)
            ci = ratio_ci(p[common].to_numpy(), b[common].to_numpy())  # >1: best faster than the pick
            row["pick_vs_best"] = ci.text()
            row["agrees"] = "within interval" if ci.low <= 1.0 else "worse"
        else:
            row["agrees"] = "pick not measured by exhaustive"
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tune")
    ap.add_argument("--state-dir", help="an existing lab's state directory (default: bring one up and down)")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--sizes", default="-b 1K -e 4M -f 16 -n 5 -w 1")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--timeout", default="60", help="tune --timeout: seconds before a run counts as hung")
    ap.add_argument("--exhaustive-dir", type=Path, help="reuse an exhaustive tuning directory from an earlier "
                    "run of this script on the same lab instead of measuring it again")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMPI_MCA_mpi_yield_when_idle="1")
    lab_handle = None
    if args.state_dir:
        env.update(SLURM_CONF=str(Path(args.state_dir) / "slurm.conf"), FABRICBENCH_LAB_DIR=args.state_dir)
    else:
        from fabricbench.lab import manager

        state = Path("/var/lib/fabricbench-lab-tunebench")
        lab_handle = manager.up(args.nodes, 2, "400mbit", state, 4, install=True, shares=[])
        env.update(SLURM_CONF=str(lab_handle.conf), FABRICBENCH_LAB_DIR=str(lab_handle.dir))
    launcher = f"srun -N{args.nodes} --mpi=pmix"
    sizes = args.sizes.split() + ["--timeout", args.timeout]
    # Outputs must be visible to every node (a node's /tmp is private): keep them under the checkout.
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = REPO / "results" / f"tune-bench-{stamp}"
    try:
        if args.exhaustive_dir:
            ex_dir = args.exhaustive_dir
            ex_wall = json.loads((ex_dir / "tuning.json").read_text())["ops"][0]["elapsed_s"]
        else:
            ex_dir = work / "exhaustive"
            _, ex_wall = tune(env, ex_dir, launcher, sizes,
                              ["--exhaustive", "--repeats", str(args.repeats), "--confirm-pairs", str(args.pairs)])
        hv_proc, hv_wall = tune(env, work / "halving", launcher, sizes,
                                ["--confirm-pairs", str(args.pairs), "--inject-candidate",
                                 "allreduce=nonoverlapping=corrupt@1"])
        t0 = time.monotonic()
        ver = subprocess.run([sys.executable, "-m", "fabricbench", "tune", "verify", str(work / "halving"),
                              "--confirm-pairs", str(args.pairs)], env=env, cwd=REPO, capture_output=True, text=True,
                             timeout=3600)
        ver_wall = time.monotonic() - t0
    finally:
        if lab_handle is not None:
            from fabricbench.lab import manager

            manager.down(lab_handle.dir)
    exh = pd.read_parquet(ex_dir / "tuning.parquet")
    hv = pd.read_parquet(work / "halving" / "tuning.parquet")
    hv_summary = json.loads((work / "halving" / "tuning.json").read_text())
    ex_summary = json.loads((ex_dir / "tuning.json").read_text())
    result = {
        "lab": f"{args.nodes} nodes, 2 leaves, 400 Mbit/s links", "sizes": args.sizes, "repeats": args.repeats,
        "pairs": args.pairs,
        "exhaustive": {"runs": int(exh.run_dir.nunique()), "search_s": search_seconds(exh, ["exhaustive"]),
                       "with_confirm_s": search_seconds(exh, ["exhaustive", "confirm"]), "wall_s": ex_wall,
                       "decisions": ex_summary["decisions"]},
        "halving": {"runs": int(hv.run_dir.nunique()), "search_s": search_seconds(hv, ["search", "descent"]),
                    "with_confirm_s": search_seconds(hv, ["search", "descent", "confirm"]), "wall_s": hv_wall,
                    "decisions": hv_summary["decisions"], "rejected": hv_summary["ops"][0]["rejected"]},
        "agreement": compare(exh, hv_summary),
        "verify": {"rc": ver.returncode, "wall_s": ver_wall, "output": ver.stdout.strip().splitlines()[-6:]},
        "dirs": [str(ex_dir), str(work / "halving")],
    }
    result["search_time_ratio"] = result["halving"]["search_s"] / result["exhaustive"]["search_s"]
    result["with_confirm_ratio"] = result["halving"]["with_confirm_s"] / result["exhaustive"]["with_confirm_s"]
    (args.out / "tune-bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = [f"# tune benchmark ({result['lab']}; all_reduce {args.sizes}; exhaustive {args.repeats} runs per candidate; "
          f"{args.pairs} confirmation pairs)", "",
          "| | runs | search time (s) | search + confirmation (s) |", "|---|---|---|---|",
          f"| exhaustive | {result['exhaustive']['runs']} | {result['exhaustive']['search_s']:.0f} | {result['exhaustive']['with_confirm_s']:.0f} |",
          f"| halving | {result['halving']['runs']} | {result['halving']['search_s']:.0f} | {result['halving']['with_confirm_s']:.0f} |",
          f"| ratio | | {result['search_time_ratio']:.2f} | {result['with_confirm_ratio']:.2f} |", "",
          "| size (B) | exhaustive best | halving pick | agrees | halving confirmed speed-up (95% CI) | written |",
          "|---|---|---|---|---|---|"]
    hv_dec = {d["size_bytes"]: d for d in hv_summary["decisions"]}
    for row in result["agreement"]:
        d = hv_dec[row["size_bytes"]]
        ci = f"{d['speedup']:.2f}x ({d['ci_low']:.2f}-{d['ci_high']:.2f})" if d.get("pairs") else "-"
        md.append(f"| {row['size_bytes']} | {row['exhaustive_best']} | {row['halving_pick']} | {row['agrees']}"
                  f"{' ' + row['pick_vs_best'] if 'pick_vs_best' in row else ''} | {ci} | {d['effective']} |")
    md += ["", f"Rejected by the halving run: {result['halving']['rejected']}", "",
           f"`tune verify` (exit {ver.returncode}): " + " / ".join(result["verify"]["output"])]
    (args.out / "tune-bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
