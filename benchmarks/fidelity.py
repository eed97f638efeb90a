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

Per size: fabricbench busbw and bare busbw (medians over repeats), their ratio and the range of the per-repeat
ratios, both times per iteration (medians), and the harness overhead per iteration = median over repeats of
(fabricbench - bare), with the range of those paired differences (the noise floor of the machine).
Sizes: small 8 B to 64 KiB (x8 steps, then 64 KiB), large 1 MiB to 64 MiB (x4 steps by default, x2 with
--large-step 2).

With 4 ranks sharing 2 cores, the run-to-run spread (10-30 %) is thousands of times the harness's own cost, so the
script also measures a harness-cost floor: one rank, torch.distributed.all_reduce replaced by a no-op in both arms,
100000 iterations; fabricbench minus bare there is exactly the Python work the Driver adds per operation.

Goal (checked; exit status 1 when it fails, naming the sizes): ratio >= 0.97 at every size >= 4 MiB.

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

# gloo with 4 ranks on 2 cores (quiet machine): about 1.3 ms per all_reduce at 8 B, 5-7 ms up to 1 MiB, 8 ms at
# 4 MiB, 27 ms at 16 MiB and 105 ms at 64 MiB, with a repeat-to-repeat spread of 10-30 %. The defaults (5 repeats
# x 2 arms x 40 iterations) take about 100 s there (about 4 minutes while other work loads the machine), half of
# it at 64 MiB; on a machine with a core per rank, raise --iters to resolve a few percent.
SMALL_SIZES = [8, 64, 512, 4 * KiB, 32 * KiB, 64 * KiB]  # x8 steps from 8 B, then the 64 KiB end point
LARGE_SIZES_X2 = [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 32 * MiB, 64 * MiB]
DEFAULT_ITERS = {"small": 40, "large": 40}
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
    from fabricbench.engine.driver import BufferPool, Driver
    from fabricbench.engine.dtypes import get_dtype
    from fabricbench.engine.ranks import discover

    plan = json.loads(os.environ[WORKER_ENV])
    ranks = discover()
    backend = TorchBackend("gloo", ranks, plan["timeout_s"])
    if plan.get("noop"):
        # The harness-cost floor: both arms call torch.distributed.all_reduce (the backend looks it up at call
        # time), so replacing it with a no-op leaves exactly the per-iteration Python work of each loop.
        def _noop_all_reduce(tensor, op=None, group=None, async_op=False):
            return None

        dist.all_reduce = _noop_all_reduce
    rank, n = backend.rank, backend.world_size
    factor = 2 * (n - 1) / n
    records = []
    rng = np.random.default_rng(1234 + rank)
    try:
        for cls, size, iters, warmup in plan["points"]:
            count = size // 4
            init = torch.from_numpy(rng.uniform(-1.0, 1.0, count).astype(np.float32))
            bare_buf = torch.empty(count, dtype=torch.float32)
            # Both arms keep their buffers for all repeats of a size: the bare loop its tensor, fabricbench its
            # buffer pool (as in one `fabricbench run`, where buffers live for the whole sweep).
            pool = BufferPool(backend, get_dtype("float"))

            def run_fabricbench() -> dict | None:
                cfg = RunConfig(ops=["all_reduce"], backend="gloo", min_bytes=size, max_bytes=size,
                                iters=iters, warmup=warmup, dtype="float", redop="sum", check_iters=0,
                                timing="aggregate", time_reduce="avg", out_dir=None, quiet=True,
                                timeout_s=plan["timeout_s"], run_id="fidelity")
                d = Driver(cfg, backend, ranks, pool=pool)
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
            if rank == 0 and not plan.get("noop"):
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
def summarize(records: list[dict]) -> list[dict]:
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
        # busbw is 0 with one rank (the floor): compare times there, which is the same ratio
        paired = ([f / b for f, b in zip(fb_bw, bare_bw)] if min(bare_bw) > 0
                  else [b / f for f, b in zip(fb_t, bare_t)])
        fb_med, bare_med = statistics.median(fb_bw), statistics.median(bare_bw)
        rows.append({
            "class": recs[0]["class"], "size_bytes": size, "iters": recs[0]["iters"],
            "warmup": recs[0]["warmup"], "repeats": len(recs),
            "fabricbench_busbw_gbps": fb_med, "bare_busbw_gbps": bare_med,
            "ratio": fb_med / bare_med if bare_med > 0 else statistics.median(bare_t) / statistics.median(fb_t),
            "paired_ratio_median": statistics.median(paired), "paired_ratio_min": min(paired),
            "paired_ratio_max": max(paired),
            "fabricbench_time_us": statistics.median(fb_t), "bare_time_us": statistics.median(bare_t),
            "bare_time_cv_pct": (100 * statistics.stdev(bare_t) / statistics.mean(bare_t)
                                 if len(bare_t) > 1 else float("nan")),
            "overhead_us": statistics.median(diffs), "overhead_min_us": min(diffs),
            "overhead_max_us": max(diffs),
        })
    return rows


def _bw(x: float) -> str:
    return f"{x:.4f}" if x < 0.1 else f"{x:.3f}"


def _us(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def markdown_table(rows: list[dict]) -> str:
    head = ("| size | iters x repeats | fabricbench busbw (GB/s) | bare busbw (GB/s) | ratio (fabricbench / bare) "
            "| ratio range over repeats | fabricbench time (us/iter) | bare time (us/iter) "
            "| overhead (us/iter, median) | overhead range (us/iter) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {fmt_size(r['size_bytes'])} | {r['iters']} x {r['repeats']} | {_bw(r['fabricbench_busbw_gbps'])} "
            f"| {_bw(r['bare_busbw_gbps'])} | {r['ratio']:.3f} "
            f"| {r['paired_ratio_min']:.2f} .. {r['paired_ratio_max']:.2f} "
            f"| {_us(r['fabricbench_time_us'])} | {_us(r['bare_time_us'])} | {r['overhead_us']:+.0f} "
            f"| {r['overhead_min_us']:+.0f} .. {r['overhead_max_us']:+.0f} |")
    return "\n".join(lines)


def goal_failures(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["size_bytes"] >= GOAL_MIN_BYTES and not r["ratio"] >= GOAL_RATIO]


# ------------------------------------------------------------------------------------------------ launcher --
def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": KiB, "M": MiB, "G": 1 << 30}.get(text[-1:], 1)
    value = int(text[:-1] if mult > 1 else text)
    if value <= 0 or value * mult % 4:
        raise argparse.ArgumentTypeError(f"{text}: sizes must be positive multiples of 4 bytes (float32)")
    return value * mult


def build_plan(args) -> list[list]:
    points = []
    if args.sizes:
        return [[cls, s, getattr(args, f"{cls}_iters") or args.iters or DEFAULT_ITERS[cls],
                 args.warmup if args.warmup is not None else DEFAULT_WARMUP[cls]]
                for s in args.sizes for cls in ["small" if s < MiB else "large"]]
    large = LARGE_SIZES_X2 if args.large_step == 2 else [s for s in LARGE_SIZES_X2 if s // MiB in (1, 4, 16, 64)]
    for cls, on, sizes in (("small", args.small, SMALL_SIZES), ("large", args.large, large)):
        if not on:
            continue
        iters = getattr(args, f"{cls}_iters") or args.iters or DEFAULT_ITERS[cls]
        warmup = args.warmup if args.warmup is not None else DEFAULT_WARMUP[cls]
        points += [[cls, s, iters, warmup] for s in sizes]
    return points


def run_ranks(nprocs: int, plan: dict, timeout_s: float, heartbeat: bool) -> dict:
    """Start `nprocs` ranks of this script on a free port; returns rank 0's records (raises on failure)."""
    with tempfile.TemporaryDirectory(prefix="fabricbench-fidelity-") as tmp:
        plan = dict(plan, timeout_s=timeout_s, result_path=str(Path(tmp, "records.json")))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FABRICBENCH_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                                    "MASTER_", "OMPI_", "PMI", "SLURM_"))}
        env.update({WORKER_ENV: json.dumps(plan), "WORLD_SIZE": str(nprocs), "LOCAL_WORLD_SIZE": str(nprocs),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1",
                    "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        if heartbeat:  # the Driver's progress thread, as the local launcher runs it
            Path(tmp, "progress").mkdir()
            env["FABRICBENCH_PROGRESS_DIR"] = str(Path(tmp, "progress"))
        procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                                  env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdin=subprocess.DEVNULL)
                 for r in range(nprocs)]
        deadline = time.monotonic() + timeout_s
        failed = None
        try:
            while failed is None:
                codes = [p.poll() for p in procs]
                bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
                if bad:
                    failed = f"rank {bad[0]} exited with status {codes[bad[0]]}"
                elif all(c == 0 for c in codes):
                    break
                elif time.monotonic() > deadline:
                    failed = f"timed out after {timeout_s:g} s (--timeout)"
                else:
                    time.sleep(0.1)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if failed:
            raise RuntimeError(failed)
        return json.loads(Path(plan["result_path"]).read_text())


def launch(args) -> int:
    points = build_plan(args)
    if not points and not args.floor:
        print("nothing to run: --no-small, --no-large and --no-floor given", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    if load_before[0] > (os.cpu_count() or 1):
        print(f"fidelity: warning: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs before the start; other "
              "work on this machine will widen the spread", file=sys.stderr, flush=True)
    t_start = time.monotonic()
    rows, data = [], {"records": [], "nranks": args.nprocs, "torch": None}
    try:
        if points:
            print(f"fidelity: {args.nprocs} ranks, gloo, {args.repeats} repeats, {len(points)} sizes",
                  file=sys.stderr, flush=True)
            data = run_ranks(args.nprocs, {"points": points, "repeats": args.repeats}, args.timeout, args.heartbeat)
            rows = summarize(data["records"])
        floor = None
        if args.floor:
            print(f"fidelity: harness-cost floor, 1 rank, all_reduce replaced by a no-op, "
                  f"{args.floor_iters} iters x {args.repeats} repeats", file=sys.stderr, flush=True)
            fdata = run_ranks(1, {"points": [["floor", 8, args.floor_iters, 1000]], "repeats": args.repeats,
                                  "noop": True}, args.timeout, args.heartbeat)
            floor = summarize(fdata["records"])[0]
            data["torch"] = data["torch"] or fdata["torch"]
    except RuntimeError as err:
        print(f"fidelity: {err}", file=sys.stderr)
        return 3
    wall_s = time.monotonic() - t_start
    load = {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}

    cpus = os.cpu_count()
    machine = (f"{cpus} CPUs ({platform.machine()}), {platform.system()} {platform.release()}, "
               f"Python {platform.python_version()}, torch {data['torch']}, gloo over loopback")
    iters_note = "; ".join(f"{c}: {it} iters + {w} warmup per arm" for c, it, w in
                           sorted({(p[0], p[2], p[3]) for p in points}, key=lambda x: x[0] != "small"))
    lines = [f"machine: {machine}"]
    if rows:
        lines += [f"{args.nprocs} ranks; {iters_note}; {args.repeats} repeats, arm order alternating; "
                  f"time = avg across ranks; check_iters 0; Driver heartbeat {'on' if args.heartbeat else 'off'}",
                  "", markdown_table(rows)]
    if floor:
        lines += ["", f"harness-cost floor (1 rank, dist.all_reduce replaced by a no-op, {floor['iters']} iters x "
                      f"{floor['repeats']} repeats): fabricbench {floor['fabricbench_time_us']:.3f} us/iter, bare "
                      f"{floor['bare_time_us']:.3f} us/iter, harness overhead {floor['overhead_us']:+.3f} us/iter "
                      f"(range {floor['overhead_min_us']:+.3f} .. {floor['overhead_max_us']:+.3f})"]
    fails = goal_failures(rows)
    goal_checked = any(r["size_bytes"] >= GOAL_MIN_BYTES for r in rows)
    if not goal_checked:
        verdict = "goal not checked: no size >= 4 MiB was run"
    elif not fails:
        verdict = "goal met: ratio >= 0.97 at every size >= 4 MiB"
    else:
        verdict = "goal FAILED (ratio < 0.97) at " + ", ".join(
            f"{fmt_size(r['size_bytes'])} ({r['ratio']:.3f}; repeats ranged {r['paired_ratio_min']:.2f} .. "
            f"{r['paired_ratio_max']:.2f}{', which includes 0.97+' if r['paired_ratio_max'] >= GOAL_RATIO else ''})"
            for r in fails)
    lines += ["", verdict, f"wall time {wall_s:.0f} s; 1-minute load average {load['before']:g} before, "
                           f"{load['after']:g} after (this benchmark alone keeps it near {args.nprocs})"]
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": " ".join(["python", "benchmarks/fidelity.py"] + (sys.argv[1:] if argv_is_cli() else [])),
               "machine": machine, "cpus": cpus, "nranks": args.nprocs, "torch": data["torch"], "backend": "gloo",
               "dtype": "float32", "op": "all_reduce", "repeats": args.repeats, "heartbeat": args.heartbeat,
               "goal": {"ratio": GOAL_RATIO, "min_bytes": GOAL_MIN_BYTES, "checked": goal_checked,
                        "failed_sizes": [r["size_bytes"] for r in fails]},
               "wall_s": wall_s, "load_average_1min": load, "rows": rows, "floor": floor, "records": data["records"]}
        out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        out.with_suffix(".md").write_text(text + "\n")
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}", file=sys.stderr)
    return 1 if fails else 0


def argv_is_cli() -> bool:
    return Path(sys.argv[0]).name == "fidelity.py"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nprocs", type=int, default=4, help="ranks to start (default 4)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats per size, each runs both arms (default 5)")
    ap.add_argument("--iters", type=int, default=None,
                    help=f"timed iterations per arm and repeat, every size (default: {DEFAULT_ITERS['small']} small, "
                         f"{DEFAULT_ITERS['large']} large)")
    ap.add_argument("--warmup", type=int, default=None,
                    help=f"warmup iterations per arm (default: {DEFAULT_WARMUP['small']} small, "
                         f"{DEFAULT_WARMUP['large']} large)")
    ap.add_argument("--small-iters", type=int, default=None, help="--iters for the small sizes only")
    ap.add_argument("--large-iters", type=int, default=None, help="--iters for the large sizes only")
    ap.add_argument("--small", action=argparse.BooleanOptionalAction, default=True,
                    help="run the small sizes, 8 B to 64 KiB (default on)")
    ap.add_argument("--large", action=argparse.BooleanOptionalAction, default=True,
                    help="run the large sizes, 1 MiB to 64 MiB (default on)")
    ap.add_argument("--large-step", type=int, choices=(2, 4), default=4,
                    help="step factor of the large sizes (default 4: 1, 4, 16, 64 MiB; 2: 1, 2, 4, ..., 64 MiB)")
    ap.add_argument("--sizes", type=lambda t: [parse_size(x) for x in t.split(",")], default=None,
                    help="only these sizes, e.g. 4M,64M (replaces --small/--large; below 1 MiB counts as small)")
    ap.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the harness-cost floor: 1 rank, all_reduce replaced by a no-op (default on)")
    ap.add_argument("--floor-iters", type=int, default=100_000, help="iterations per arm of the floor (default 100000)")
    ap.add_argument("--heartbeat", action=argparse.BooleanOptionalAction, default=True,
                    help="run the Driver with its progress heartbeat thread, as `fabricbench run` does (default on)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before the ranks are stopped (default 900)")
    ap.add_argument("--out", default=None, help="also write FILE.json (every number) and FILE.md (the table)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker()
    if args.nprocs < 2 or args.repeats < 1:
        ap.error("--nprocs must be >= 2 and --repeats >= 1")
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
