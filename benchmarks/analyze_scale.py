"""Scale of `fabricbench analyze` (issue 5 benchmark): 2,048 nodes, all pairs x 2 directions x sizes.

Writes a simulated sweep (pattern all: 2,048 x 2,047 directed pairs = 4.19 M rows per size; 3 sizes = 12.6 M
rows; and a random-K sweep) with two faults, then times `load + analyze` in a fresh process (what
`fabricbench analyze DIR` does, without rendering) and reads that process's peak RSS (ru_maxrss). Goal: <= 10 s
and <= 2 GB on 2 cores. Usage: python benchmarks/analyze_scale.py [--nodes 2048] [--sizes 64M,256M,1G]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
def peak_mb():
    # VmHWM: this process's own high-water mark (ru_maxrss would include the parent's, inherited at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
t0 = time.perf_counter()
from fabricbench.analyze.importers import load
from fabricbench.analyze.analysis import analyze
from fabricbench.analyze.topo_adapter import fabric_from_leaves
truth = json.load(open(sys.argv[1] + "/simulation.json"))
t1 = time.perf_counter()
ds = load(sys.argv[1])
t2 = time.perf_counter()
res = analyze(ds, fabric_from_leaves(truth["leaves"]))
t3 = time.perf_counter()
print(json.dumps({"rows": int(res.counts.get("pair_rows", 0)), "nodes": res.counts.get("nodes"),
                  "import_s": t1 - t0, "load_s": t2 - t1, "analyze_s": t3 - t2, "total_s": t3 - t0,
                  "peak_rss_mb": peak_mb(),
                  "verdicts": [(v.kind, v.component, round(v.confidence, 2)) for v in res.verdicts[:10]]}))
"""


def run(nodes: int, leaves: int, pattern: str, sizes: list[int], tmp: str) -> dict:
    from fabricbench.analyze.simulate import SimSpec, parse_fault, write

    spec = SimSpec(nodes=nodes, leaves=leaves, pattern=pattern, sizes=sizes, seed=7,
                   faults=[parse_fault("nic:node0100:0.7"), parse_fault(f"uplink:leaf{leaves // 2}:0.8")])
    t = time.perf_counter()
    out, _ = write(spec, Path(tmp) / pattern)
    gen = time.perf_counter() - t
    size = (Path(out) / "results.parquet").stat().st_size
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update({"pattern": pattern, "sizes": sizes, "generate_s": gen, "parquet_mb": size / 2**20})
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=2048)
    ap.add_argument("--leaves", type=int, default=64)
    ap.add_argument("--sizes", default="64M,256M,1G")
    ap.add_argument("--random-k", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from fabricbench.analyze.cli import _parse_size

    sizes = [_parse_size(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for pattern, sz in (("all", sizes[-1:]), ("all", sizes), (f"random-{args.random_k}", sizes)):
            r = run(args.nodes, args.leaves, pattern, sz, tmp)
            print(json.dumps(r), flush=True)
            results.append(r)
            import shutil

            shutil.rmtree(Path(tmp) / pattern, ignore_errors=True)
    doc = {"machine": f"{os.cpu_count()} CPUs", "python": sys.version.split()[0], "results": results}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "analyze-scale.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
