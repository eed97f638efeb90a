"""Regression detection on generated series with known change points (per-component states, fabricbench.health.states).

Each series: a component's nightly readings with log-normal noise; half of them drop by a given depth from a
random night on (sustained). After the last night a series is flagged when its state is suspect or regressed
(a drop seen once or more); 'regressed' alone needs >= 2 low nights. Precision = flagged series that really
changed / flagged; recall = changed series flagged / changed. First-seen is right when it names the change night.

    python benchmarks/health_detection.py [--series 2000] [--runs 20]
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabricbench.health import states  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def series(n: int, runs: int, noise: float, depth: float, seed: int):
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for s in range(n):
        level = rng.uniform(5e9, 50e9)
        change = int(rng.integers(3, runs - 1)) if s % 2 == 0 else None  # at least 3 good nights first
        truth[f"c{s}"] = change
        v = level * np.exp(rng.normal(0, noise, runs))
        if change is not None:
            v[change:] *= 1 - depth
        rows.append(pd.DataFrame({"component_kind": "nic", "component": f"c{s}", "node": f"c{s}",
                                  "metric": "tx_bytes_per_second", "run_id": [f"r{r:03d}" for r in range(runs)],
                                  "run_ts": [pd.Timestamp(T0 + timedelta(days=r)) for r in range(runs)], "value": v}))
    return pd.concat(rows, ignore_index=True), truth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--drop", type=float, default=states.Params().drop, help="Params.drop (the smallest drop called low).")
    args = ap.parse_args()
    print(f"drop threshold {args.drop:.0%} (or 3 x the component's own noise, whichever is larger)\n")
    print("| noise | drop | precision | recall | regressed: first-seen right |")
    print("|---|---|---|---|---|")
    for noise in (0.03, 0.08):
        for depth in (0.10, 0.15, 0.20, 0.30, 0.40):
            df, truth = series(args.series, args.runs, noise, depth, seed=int(depth * 100 + noise * 1000))
            st = states.compute(df, states.Params(drop=args.drop)).set_index("component")
            flagged = set(st.index[st["state"].isin(["suspect", "regressed"])])
            changed = {c for c, ch in truth.items() if ch is not None}
            tp = len(flagged & changed)
            reg = st[st["state"] == "regressed"]
            right = sum(reg.loc[c, "first_seen_run"] == f"r{truth[c]:03d}" for c in reg.index if truth[c] is not None)
            print(f"| {noise:.0%} | {depth:.0%} | {tp / max(len(flagged), 1):.3f} ({tp}/{len(flagged)}) | "
                  f"{tp / max(len(changed), 1):.3f} ({tp}/{len(changed)}) | {right}/{len(reg)} |")


if __name__ == "__main__":
    main()
