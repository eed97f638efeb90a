#!/usr/bin/env python3
"""Fidelity benchmark: fabricbench's reported all_reduce busbw against a bare loop of the same calls.

What it answers: does the harness (fabricbench's Driver: buffers, pattern data, fault point, call counter, the
per-iteration perf_counter_ns marks it records on CPU, the reduction across ranks, the busbw accounting) report
the bandwidth that the library actually delivers, and what does it add per operation?

How: the script starts `--nprocs` ranks itself (one process each, gloo over loopback, OMP_NUM_THREADS=1, a free
port). Every rank opens ONE fabricbench TorchBackend("gloo") and, in that same process group, for every size
and for each of `--repeats` repeats, runs both arms back to back:

  (a) fabricbench: `Driver` on op all_reduce for that one size (aggregate timing, time = avg across ranks,
      float32, sum, in place, the same iters and warmup as the bare loop). check_iters=0, so the data checks,
      which run after the timed loop anyway, do not add wall time to the benchmark. By default the Driver runs
      with its progress heartbeat thread on, as under `fabricbench run --nprocs N` (`--no-heartbeat` drops it).
  (b) bare: warmup x dist.all_reduce, dist.barrier(), perf_counter_ns, iters x dist.all_reduce on a float32
      tensor of the same size, perf_counter_ns; per-rank time/iter averaged across ranks (as (a) does).

The order of the two arms alternates from repeat to repeat (a,b then b,a), so drift and "who runs second"
effects cancel in the paired differences. busbw = 2(n-1)/n * bytes / time (decimal GB/s). fabricbench's
numbers are what it reports (its row's busbw_gbps and time_us), not recomputed.

Per size: fabricbench busbw and bare busbw (medians over repeats), their ratio, both times per iteration
(medians), and the harness overhead per iteration = median over repeats of (fabricbench - bare), with the
range of those paired differences (the noise floor of this machine).

Goal (checked; exit status 1 when it fails): ratio >= 0.97 at every size >= 4 MiB.

Usage:
  python benchmarks/fidelity.py                       # small and large sizes, 4 ranks, 5 repeats
  python benchmarks/fidelity.py --no-small --repeats 3
  python benchmarks/fidelity.py --out benchmarks/results/fidelity   # also writes .json and .md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WORKER_ENV = "FABRICBENCH_FIDELITY_WORKER"  # JSON: the plan, given to every rank
GOAL_RATIO, GOAL_MIN_BYTES = 0.97, 4 << 20
KiB, MiB = 1 << 10, 1 << 20

# gloo with 4 ranks on 2 cores: about 6 ms per small all_reduce, about 30 ms at 16 MiB, 120 ms at 64 MiB.
# The defaults keep a full run (both classes, 5 repeats) at about 2-3 minutes there; on a bigger machine raise
# --iters for less noise.
SMALL_SIZES = [8, 64, 512, 4 * KiB, 32 * KiB, 64 * KiB]  # x8 steps from 8 B, then the 64 KiB end point
LARGE_SIZES_X2 = [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 32 * MiB, 64 * MiB]
DEFAULT_ITERS = {"small": 40, "large": 10}
DEFAULT_WARMUP = {"small": 5, "large": 2}


def fmt_size(n: int) -> str:
    for unit, f in (("MiB", MiB), ("KiB", KiB)):
        if n >= f and n % f == 0:
            return f"{n // f} {unit}"
    return f"{n} B"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ one rank --
def worker() -> int:
    import numpy as np
    import torch
    import torch.distributed as dist

    from fabricbench.backends.torch_dist import TorchBackend
    from fabricbench.engine.config import RunConfig
    from fabricbench.engine.driver import Driver
    from fabricbench.engine.ranks import discover

    plan = json.loads(os.environ[WORKER_ENV])
    ranks = discover()
    backend = TorchBackend("gloo", ranks, plan["timeout_s"])
    rank, n = backend.rank, backend.world_size
    factor = 2 * (n - 1) / n
    records = []
    rng = np.random.default_rng(1234 + rank)
    try:
        for cls, size, iters, warmup in plan["points"]:
            count = size // 4
            init = torch.from_numpy(rng.uniform(-1.0, 1.0, count).astype(np.float32))
            bare_buf = torch.empty(count, dtype=torch.float32)

            def run_fabricbench() -> dict | None:
                cfg = RunConfig(ops=["all_reduce"], backend="gloo", min_bytes=size, max_bytes=size,
                                iters=iters, warmup=warmup, dtype="float", redop="sum", check_iters=0,
                                timing="aggregate", time_reduce="avg", out_dir=None, quiet=True,
                                timeout_s=plan["timeout_s"], run_id="fidelity")
                d = Driver(cfg, backend, ranks)
                d.run()
                if rank != 0:
                    return None
                row = next(r for r in d.rows if r["row_kind"] == "op")
                assert row["size_bytes"] == size and row["placement"] == "in-place", row
                return {"time_us": row["time_us"], "busbw_gbps": row["busbw_gbps"],
                        "algbw_gbps": row["algbw_gbps"], "time_min_us": row["time_min_us"],
                        "time_max_us": row["time_max_us"]}

            def run_bare() -> dict | None:
                bare_buf.copy_(init)  # fresh values each repeat, as the Driver writes its data each run
                for _ in range(warmup):
                    dist.all_reduce(bare_buf, op=dist.ReduceOp.SUM)
                dist.barrier()
                t0 = time.perf_counter_ns()
                for _ in range(iters):
                    dist.all_reduce(bare_buf, op=dist.ReduceOp.SUM)
                t1 = time.perf_counter_ns()
                per_rank_us = backend.gather_object((t1 - t0) / iters / 1e3)
                if rank != 0:
                    return None
                t_us = float(np.mean(per_rank_us))
                return {"time_us": t_us, "busbw_gbps": size / (t_us * 1e3) * factor,
                        "algbw_gbps": size / (t_us * 1e3), "time_min_us": float(min(per_rank_us)),
                        "time_max_us": float(max(per_rank_us))}

            t_size = time.monotonic()
            for rep in range(plan["repeats"]):
                arms = (("fabricbench", run_fabricbench), ("bare", run_bare))
                if rep % 2:
                    arms = arms[::-1]
                rec = {"class": cls, "size_bytes": size, "iters": iters, "warmup": warmup, "repeat": rep,
                       "order": [a for a, _ in arms]}
                for name, fn in arms:
                    rec[name] = fn()
                if rank == 0:
                    records.append(rec)
            if rank == 0:
                print(f"  {cls:5s} {fmt_size(size):>7s}: {plan['repeats']} repeats x 2 arms x "
                      f"({warmup}+{iters}) iters in {time.monotonic() - t_size:.1f} s", file=sys.stderr,
                      flush=True)
        if rank == 0:
            Path(plan["result_path"]).write_text(json.dumps({"records": records, "nranks": n,
                                                             "torch": torch.__version__}))
        backend.barrier()
    finally:
        backend.close()
    return 0


# ------------------------------------------------------------------------------------------------ analysis --
def summarize(records: list[dict], nranks: int) -> list[dict]:
    by_size: dict[int, list[dict]] = {}
    for r in records:
        by_size.setdefault(r["size_bytes"], []).append(r)
    rows = []
    for size in sorted(by_size):
        recs = by_size[size]
        fb_bw = [r["fabricbench"]["busbw_gbps"] for r in recs]
        bare_bw = [r["bare"]["busbw_gbps"] for r in recs]
        fb_t = [r["fabricbench"]["time_us"] for r in recs]
        bare_t = [r["bare"]["time_us"] for r in recs]
        diffs = [f - b for f, b in zip(fb_t, bare_t)]
        fb_med, bare_med = statistics.median(fb_bw), statistics.median(bare_bw)
        rows.append({
            "class": recs[0]["class"], "size_bytes": size, "iters": recs[0]["iters"],
            "warmup": recs[0]["warmup"], "repeats": len(recs),
            "fabricbench_busbw_gbps": fb_med, "bare_busbw_gbps": bare_med,
            "ratio": fb_med / bare_med if bare_med > 0 else float("nan"),
            "paired_ratio_median": statistics.median(f / b for f, b in zip(fb_bw, bare_bw)),
            "fabricbench_time_us": statistics.median(fb_t), "bare_time_us": statistics.median(bare_t),
            "overhead_us": statistics.median(diffs), "overhead_min_us": min(diffs),
            "overhead_max_us": max(diffs),
            "overhead_pct": 100 * statistics.median(diffs) / statistics.median(bare_t),
        })
    return rows


def _bw(x: float) -> str:
    return f"{x:.4f}" if x < 0.1 else f"{x:.3f}"


def markdown_table(rows: list[dict]) -> str:
    head = ("| size | iters | fabricbench busbw (GB/s) | bare busbw (GB/s) | ratio (fabricbench / bare) "
            "| fabricbench time (us/iter) | bare time (us/iter) | overhead (us/iter, median) "
            "| overhead range (us/iter) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {fmt_size(r['size_bytes'])} | {r['iters']} | {_bw(r['fabricbench_busbw_gbps'])} "
            f"| {_bw(r['bare_busbw_gbps'])} | {r['ratio']:.3f} | {r['fabricbench_time_us']:.0f} "
            f"| {r['bare_time_us']:.0f} | {r['overhead_us']:+.0f} "
            f"| {r['overhead_min_us']:+.0f} .. {r['overhead_max_us']:+.0f} |")
    return "\n".join(lines)


def goal_failures(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["size_bytes"] >= GOAL_MIN_BYTES and not r["ratio"] >= GOAL_RATIO]


# ------------------------------------------------------------------------------------------------ launcher --
def build_plan(args) -> list[list]:
    points = []
    for cls, on, sizes in (("small", args.small, SMALL_SIZES),
                           ("large", args.large, LARGE_SIZES_X2 if args.large_step == 2 else
                            [s for s in LARGE_SIZES_X2 if (s // MiB) in (1, 4, 16, 64)])):
        if not on:
            continue
        iters = getattr(args, f"{cls}_iters") or args.iters or DEFAULT_ITERS[cls]
        warmup = getattr(args, f"{cls}_warmup")
        warmup = warmup if warmup is not None else (args.warmup if args.warmup is not None else DEFAULT_WARMUP[cls])
        points += [[cls, s, iters, warmup] for s in sizes]
    return points


def launch(args) -> int:
    points = build_plan(args)
    if not points:
        print("nothing to run: both --no-small and --no-large given", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="fabricbench-fidelity-"))
    result_path = tmp / "records.json"
    plan = {"points": points, "repeats": args.repeats, "timeout_s": args.timeout, "result_path": str(result_path)}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FABRICBENCH_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                                "MASTER_", "OMPI_", "PMI", "SLURM_"))}
    env.update({WORKER_ENV: json.dumps(plan), "WORLD_SIZE": str(args.nprocs),
                "LOCAL_WORLD_SIZE": str(args.nprocs), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    if args.heartbeat:  # the Driver's progress thread, as the local launcher runs it
        (tmp / "progress").mkdir()
        env["FABRICBENCH_PROGRESS_DIR"] = str(tmp / "progress")
    print(f"fidelity: {args.nprocs} ranks, gloo, {args.repeats} repeats, {len(points)} sizes "
          f"(progress on stderr)", file=sys.stderr, flush=True)
    t_start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdin=subprocess.DEVNULL)
             for r in range(args.nprocs)]
    deadline = time.monotonic() + args.timeout
    failed = None
    try:
        while any(p.poll() is None for p in procs):
            bad = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if bad:
                failed = f"rank {bad[0]} exited with status {procs[bad[0]].returncode}"
                break
            if time.monotonic() > deadline:
                failed = f"timed out after {args.timeout:g} s (--timeout)"
                break
            time.sleep(0.1)
        else:
            bad = [i for i, p in enumerate(procs) if p.returncode != 0]
            if bad:
                failed = f"rank {bad[0]} exited with status {procs[bad[0]].returncode}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if failed:
        print(f"fidelity: {failed}", file=sys.stderr)
        return 3
    wall_s = time.monotonic() - t_start
    data = json.loads(result_path.read_text())
    rows = summarize(data["records"], data["nranks"])
    table = markdown_table(rows)
    cpus = os.cpu_count()
    machine = (f"{platform.node()}: {cpus} CPUs, {platform.platform()}, Python {platform.python_version()}, "
               f"torch {data['torch']}, gloo, {data['nranks']} ranks")
    iters_note = ", ".join(f"{c}: {it} iters + {w} warmup" for c, it, w in
                           sorted({(p[0], p[2], p[3]) for p in points}, key=lambda x: x[0] != "small"))
    print(f"\nmachine: {machine}")
    print(f"each arm: {iters_note}; {args.repeats} repeats, arms alternating; time = avg across ranks; "
          f"check_iters 0; heartbeat {'on' if args.heartbeat else 'off'}; wall {wall_s:.0f} s\n")
    print(table)
    fails = goal_failures(rows)
    goal_checked = any(r["size_bytes"] >= GOAL_MIN_BYTES for r in rows)
    if goal_checked:
        verdict = ("goal met: ratio >= 0.97 at every size >= 4 MiB" if not fails else
                   "goal FAILED (ratio < 0.97) at " + ", ".join(f"{fmt_size(r['size_bytes'])} "
                                                              f"({r['ratio']:.3f})" for r in fails))
    else:
        verdict = "goal not checked: no size >= 4 MiB was run"
    print(f"\n{verdict}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "machine": machine,
               "cpus": cpus, "nranks": data["nranks"], "torch": data["torch"], "backend": "gloo",
               "dtype": "float32", "op": "all_reduce", "repeats": args.repeats, "heartbeat": args.heartbeat,
               "goal": {"ratio": GOAL_RATIO, "min_bytes": GOAL_MIN_BYTES, "failed_sizes":
                        [r["size_bytes"] for r in fails], "checked": goal_checked},
               "wall_s": wall_s, "rows": rows, "records": data["records"]}
        out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        out.with_suffix(".md").write_text(f"machine: {machine}\n\neach arm: {iters_note}; {args.repeats} repeats\n\n"
                                          f"{table}\n\n{verdict}\n")
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}", file=sys.stderr)
    for p in tmp.rglob("*"):
        if p.is_file():
            p.unlink()
    for p in sorted(tmp.rglob("*"), reverse=True) + [tmp]:
        p.rmdir()
    return 1 if fails else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nprocs", type=int, default=4, help="ranks to start (default 4)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats per size, each runs both arms (default 5)")
    ap.add_argument("--iters", type=int, default=None,
                    help="timed iterations per arm for every size (default: 40 small, 10 large)")
    ap.add_argument("--warmup", type=int, default=None, help="warmup iterations per arm (default: 5 small, 2 large)")
    ap.add_argument("--small-iters", type=int, default=None, help="override --iters for the small sizes")
    ap.add_argument("--large-iters", type=int, default=None, help="override --iters for the large sizes")
    ap.add_argument("--small-warmup", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--large-warmup", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--small", action=argparse.BooleanOptionalAction, default=True,
                    help="run the small sizes, 8 B to 64 KiB (default on)")
    ap.add_argument("--large", action=argparse.BooleanOptionalAction, default=True,
                    help="run the large sizes, 1 MiB to 64 MiB (default on)")
    ap.add_argument("--large-step", type=int, choices=(2, 4), default=2,
                    help="step factor of the large sizes (default 2: 1,2,4,...,64 MiB; 4: 1,4,16,64 MiB)")
    ap.add_argument("--heartbeat", action=argparse.BooleanOptionalAction, default=True,
                    help="run the Driver with its progress heartbeat thread, as `fabricbench run` does (default on)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before the ranks are stopped (default 900)")
    ap.add_argument("--out", default=None, help="also write FILE.json (all numbers) and FILE.md (the table)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker()
    if args.nprocs < 2 or args.repeats < 1:
        ap.error("--nprocs must be >= 2 and --repeats >= 1")
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
