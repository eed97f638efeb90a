"""History at fleet scale: 365 nightly runs x 2,048 nodes, random-8 partners (~6 M directed pair rows plus
~1.5 M NIC rows), written through the real store (one Parquet file per run). Then, each in a fresh process so
its peak memory is its own: the regression query (states of every component over the last 30 runs) and
`health report` (HTML with trend plots and the latest heatmap). Goal: each <= 10 s and <= 2 GB.

    python benchmarks/health_history.py [--runs 365] [--nodes 2048] [--partners 8] [--dir /tmp/fb-health-bench]

Faults are injected (NICs that drop 40% from a given night on) and the script checks that the query finds
exactly them as regressed, with the right first-seen night.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabricbench.health import history as hist  # noqa: E402

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=timezone.utc)
FAULTS = {17: 300, 555: 340, 1200: 362, 2000: 363}  # node index -> first bad night


def _col(n, value, typ=pa.string()):
    return pa.array([value] * n, typ) if value is not None else pa.nulls(n, typ)


def generate(directory: Path, runs: int, n: int, k: int, seed: int = 1) -> int:
    rng = np.random.default_rng(seed)
    names = np.array([f"n{i:04d}" for i in range(n)], dtype=object)
    nics = np.array([f"n{i:04d}/nic" for i in range(n)], dtype=object)
    level = 48e9 * np.exp(rng.normal(0, 0.02, n))  # each NIC's own level
    total = 0
    for r in range(runs):
        ts = T0 + timedelta(days=r)
        rid = hist.new_run_id(ts)
        factor = np.ones(n)
        for node, night in FAULTS.items():
            if r >= night and node < n:
                factor[node] = 0.6
        src, dst = [], []
        for _ in range(k):
            perm = rng.permutation(n)
            a, b = perm[0::2], perm[1::2]
            src += [a, b]
            dst += [b, a]
        src, dst = np.concatenate(src), np.concatenate(dst)
        bw = np.minimum(level[src] * factor[src], level[dst] * factor[dst]) * np.exp(rng.normal(0, 0.03, len(src)))
        m = len(src)
        pair = pa.table({
            "schema_version": pa.array(np.full(m, 1, np.int16)), "run_id": _col(m, rid),
            "run_ts": pa.array(np.full(m, np.datetime64(ts.replace(tzinfo=None), "us")), pa.timestamp("us", tz="UTC")),
            "source": _col(m, "sweep"), "component_kind": _col(m, "pair"),
            "component": pa.array(names[src] + "->" + names[dst]), "node": pa.array(names[src]),
            "partner": pa.array(names[dst]), "metric": _col(m, "bw_bytes_per_second"), "value": pa.array(bw),
            "unit": _col(m, "bytes_per_second"), "status": _col(m, "ok"), "detail": _col(m, None)})
        tx = np.array([np.median(bw[src == i]) for i in range(n)])
        rx = np.array([np.median(bw[dst == i]) for i in range(n)])
        rows = []
        for metric, v in (("tx_bytes_per_second", tx), ("rx_bytes_per_second", rx)):
            rows.append(pa.table({
                "schema_version": pa.array(np.full(n, 1, np.int16)), "run_id": _col(n, rid),
                "run_ts": pa.array(np.full(n, np.datetime64(ts.replace(tzinfo=None), "us")), pa.timestamp("us", tz="UTC")),
                "source": _col(n, "sweep"), "component_kind": _col(n, "nic"), "component": pa.array(nics),
                "node": pa.array(names), "partner": _col(n, None), "metric": _col(n, metric), "value": pa.array(v),
                "unit": _col(n, "bytes_per_second"), "status": _col(n, "ok"), "detail": _col(n, None)}))
        table = pa.concat_tables([pair.cast(hist.MEASUREMENT_SCHEMA), *[t.cast(hist.MEASUREMENT_SCHEMA) for t in rows]])
        hist.append_measurements(directory, rid, "sweep", table)
        hist.write_run(directory, rid, {"run_id": rid, "run_ts": ts.isoformat(), "kind": "sweep"})
        total += table.num_rows
    return total


def _child(task: str, directory: str) -> None:
    """One measured step in this (fresh) process; prints a JSON line."""
    t0 = time.perf_counter()
    if task == "regressions":
        from fabricbench.health import states

        con = hist.connect(directory)
        series = states.load_series(con)
        st = states.compute(series)
        from fabricbench.health.runner import _state_table

        last = series["run_ts"].max()
        hist.write_states(directory, "bench", _state_table(st, "bench", last.to_pydatetime()))
        reg = st[(st["state"] == "regressed") & (st["component_kind"] == "nic")]
        found = sorted({(c, r) for c, r in zip(reg["node"], reg["first_seen_run"])})
        out = {"rows_read": len(series), "series": len(st), "regressed_nics": found}
    else:
        from fabricbench.health import report

        data = report.gather(directory, timedelta(days=30))
        page = report.render_html(data)
        Path(directory, "report.html").write_text(page)
        out = {"html_bytes": len(page), "plots": page.count("data:image/png")}
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=365)
    ap.add_argument("--nodes", type=int, default=2048)
    ap.add_argument("--partners", type=int, default=8)
    ap.add_argument("--dir", default="/tmp/fb-health-bench")
    ap.add_argument("--keep", action="store_true", help="Reuse an existing store of the same size.")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.dir)
        return
    directory = Path(args.dir)
    t0 = time.perf_counter()
    if not (args.keep and directory.exists()):
        shutil.rmtree(directory, ignore_errors=True)
        rows = generate(directory, args.runs, args.nodes, args.partners)
        print(f"generated {rows:,} rows in {args.runs} files in {time.perf_counter() - t0:.0f} s "
              f"({sum(p.stat().st_size for p in directory.rglob('*.parquet')) / 1e6:.0f} MB on disk)")
    night_id = {r: hist.new_run_id(T0 + timedelta(days=r)) for r in FAULTS.values()}
    for task in ("regressions", "report"):
        proc = subprocess.run([sys.executable, __file__, "--child", task, "--dir", str(directory)], capture_output=True,
                              text=True, check=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{task}: {res['seconds']:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MB, " +
              ", ".join(f"{k}={v}" for k, v in res.items() if k not in ("seconds", "peak_rss_mb", "regressed_nics")))
        if task == "regressions":
            want = sorted((f"n{node:04d}", night_id[night]) for node, night in FAULTS.items()
                          if node < args.nodes and night < args.runs - 1)
            got = [tuple(x) for x in res["regressed_nics"]]
            print(f"  regressed NICs found: {got}\n  injected (>= 2 bad nights): {want}\n  "
                  f"{'MATCH' if got == want else 'MISMATCH'}")


if __name__ == "__main__":
    main()
