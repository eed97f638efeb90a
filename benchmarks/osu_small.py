#!/usr/bin/env python3
"""Small messages against OSU semantics: fabricbench's MPI backend vs a bare mpi4py loop written as OSU's tests.

Open MPI's own osu_latency/osu_bw/osu_bibw are not packaged in Debian (`apt-cache search osu` finds no OSU
micro-benchmarks), so the reference is a bare mpi4py loop with OSU's structure (OSU 7.x, c/mpi/pt2pt):
  osu_latency: rank 0 Send then Recv, rank 1 Recv then Send; latency = elapsed / (2 x iterations).
  osu_bw:      per iteration rank 0 posts `window` Isend of the same buffer and Waitall, rank 1 posts `window`
               Irecv and Waitall then sends a 4-byte acknowledgement; bandwidth = size x window x iterations /
               elapsed.
  osu_bibw:    per iteration both ranks post `window` Irecv, then `window` Isend, then Waitall;
               bandwidth = 2 x size x window x iterations / elapsed.
Both arms run under one `mpirun -np 2` each, alternately, `--repeats` times; the table gives medians, the
ratio fabricbench / bare, and the range of the per-repeat ratios (the noise of this machine).

fabricbench's numbers are what `fabricbench run --backend mpi pingpong p2p_uni p2p_bi -d uint8 -c 0` reports
(pingpong's time is one way; p2p_uni/p2p_bi's time is per message, algbw in GB/s, shown here in MB/s as OSU
prints, 1 MB = 1e6 B).

Usage: python benchmarks/osu_small.py [--repeats 3] [--iters 200] [--window 64] [--out benchmarks/results/osu-small]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZES = [1, 8, 64, 512, 4096, 32768, 65536]

BARE = r'''
import json, sys, time
import numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
sizes, iters, warm, window = json.loads(sys.argv[1])
ack = np.zeros(4, np.uint8)
out = {}
for size in sizes:
    s = np.full(size, 1, np.uint8); r = np.zeros(size, np.uint8)
    peer = 1 - rank
    res = {}
    # osu_latency
    for i in range(warm + iters):
        if i == warm:
            comm.Barrier(); t0 = MPI.Wtime()
        if rank == 0:
            comm.Send(s, 1, 1); comm.Recv(r, 1, 1)
        else:
            comm.Recv(r, 0, 1); comm.Send(s, 0, 1)
    res["latency_us"] = (MPI.Wtime() - t0) * 1e6 / (2 * iters)
    # osu_bw
    for i in range(warm + iters):
        if i == warm:
            comm.Barrier(); t0 = MPI.Wtime()
        if rank == 0:
            MPI.Request.Waitall([comm.Isend(s, 1, 100) for _ in range(window)])
            comm.Recv(ack, 1, 101)
        else:
            MPI.Request.Waitall([comm.Irecv(r, 0, 100) for _ in range(window)])
            comm.Send(ack, 0, 101)
    res["bw_MBps"] = size * window * iters / (MPI.Wtime() - t0) / 1e6
    # osu_bibw
    for i in range(warm + iters):
        if i == warm:
            comm.Barrier(); t0 = MPI.Wtime()
        reqs = [comm.Irecv(r, peer, 10) for _ in range(window)]
        reqs += [comm.Isend(s, peer, 10) for _ in range(window)]
        MPI.Request.Waitall(reqs)
    res["bibw_MBps"] = 2 * size * window * iters / (MPI.Wtime() - t0) / 1e6
    out[size] = res
if rank == 0:
    print(json.dumps(out))
'''


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM_WORLD", "PMIX_", "SLURM_"))}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               OMPI_MCA_mpi_yield_when_idle="1", PYTHONPATH=str(REPO))
    return env


def _mpirun(*args: str) -> subprocess.CompletedProcess:
    cmd = ["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none", sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900, check=True)


def bare(iters: int, warm: int, window: int) -> dict:
    proc = _mpirun("-c", BARE, json.dumps([SIZES, iters, warm, window]))
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def fabricbench(iters: int, warm: int, window: int) -> dict:
    from fabricbench.results import read_results

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r"
        res = {}  # one run per size: these sizes are no -f/-i progression
        for size in SIZES:
            _mpirun("-m", "fabricbench", "run", "--backend", "mpi", "pingpong", "p2p_uni", "p2p_bi", "-d", "uint8",
                    "-b", str(size), "-e", str(size), "-n", str(iters), "-w", str(warm), "-c", "0",
                    "--window", str(window), "-q", "--out", str(out / str(size)))
            frame = read_results(out / str(size))
            ops = frame[frame.row_kind == "op"].set_index("op")
            res[size] = {"latency_us": float(ops.loc["pingpong", "time_us"]),
                         "bw_MBps": float(ops.loc["p2p_uni", "algbw_gbps"]) * 1e3,
                         "bibw_MBps": float(ops.loc["p2p_bi", "algbw_gbps"]) * 1e3}
        return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args()
    if not shutil.which("mpirun"):
        print("mpirun not found (apt-get install openmpi-bin)", file=sys.stderr)
        return 2
    runs = {"fabricbench": [], "bare": []}
    start = time.time()
    load = os.getloadavg()[0]
    for rep in range(args.repeats):
        order = ("fabricbench", "bare") if rep % 2 == 0 else ("bare", "fabricbench")
        for arm in order:
            fn = fabricbench if arm == "fabricbench" else bare
            runs[arm].append(fn(args.iters, args.warmup, args.window))
    rows = []
    for size in SIZES:
        row = {"size": size}
        for metric in ("latency_us", "bw_MBps", "bibw_MBps"):
            fb = [r[size][metric] for r in runs["fabricbench"]]
            bb = [r[size][metric] for r in runs["bare"]]
            ratios = [a / b for a, b in zip(fb, bb) if b]
            row[metric] = {"fabricbench": statistics.median(fb), "bare": statistics.median(bb),
                           "ratio": statistics.median(fb) / statistics.median(bb),
                           "ratio_min": min(ratios), "ratio_max": max(ratios)}
        rows.append(row)
    header = ("| size (B) | latency fabricbench (us) | latency bare (us) | ratio (range) | bw fabricbench (MB/s) | "
              "bw bare (MB/s) | ratio (range) | bibw fabricbench (MB/s) | bibw bare (MB/s) | ratio (range) |")
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        lat, bw, bi = r["latency_us"], r["bw_MBps"], r["bibw_MBps"]
        lines.append(f"| {r['size']} | {lat['fabricbench']:.2f} | {lat['bare']:.2f} | {lat['ratio']:.2f} "
                     f"({lat['ratio_min']:.2f}..{lat['ratio_max']:.2f}) | {bw['fabricbench']:.2f} | {bw['bare']:.2f} | "
                     f"{bw['ratio']:.2f} ({bw['ratio_min']:.2f}..{bw['ratio_max']:.2f}) | {bi['fabricbench']:.2f} | "
                     f"{bi['bare']:.2f} | {bi['ratio']:.2f} ({bi['ratio_min']:.2f}..{bi['ratio_max']:.2f}) |")
    table = "\n".join(lines)
    meta = (f"{args.repeats} repeats x {args.iters} iterations ({args.warmup} warm-up), window {args.window}, "
            f"Open MPI over shared memory, 2 ranks, 1-minute load average {load:.1f} at start, "
            f"{time.time() - start:.0f} s")
    print(meta)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=1))
        Path(args.out + ".md").write_text(meta + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
