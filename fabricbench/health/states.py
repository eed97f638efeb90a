"""Per-component state from the component's own history.

For each series (component, metric) in time order: the baseline is the median of its last `window` good
readings (robust: one bad night does not move it), its noise the relative MAD of those readings (floored). A
reading is *low* when it lies below baseline x (1 - max(drop, sigmas x noise)); a low reading does not enter
the baseline. Check results (metric `check_pass`, 1 or 0) are low when 0, whatever the history.

States of the latest reading:
- new: fewer than `min_base` good readings before it (nothing to compare with: inconclusive, never healthy)
- suspect: low now, not the run before (one reading; a regression to be confirmed)
- regressed: low in the last >= 2 runs in a row (sustained); first_seen is the first run of that stretch
- flapping: low and not low alternating (>= 3 changes among the last `recent` readings)
- recovered: not low now, low within the last `recent` readings
- ok: not low, none of the above
Each state row carries first-seen, the last good run and the readings behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

BANDWIDTH_METRICS = ("bw_bytes_per_second", "tx_bytes_per_second", "rx_bytes_per_second", "cross_leaf_bytes_per_second")
CHECK_METRIC = "check_pass"


@dataclass
class Params:
    window: int = 7  # good readings the baseline is the median of
    min_base: int = 2  # good readings needed before a reading can be judged
    drop: float = 0.15  # smallest drop called low, as a fraction of the baseline
    sigmas: float = 3.0  # ... or this many relative noise units, whichever is larger
    noise_floor: float = 0.02
    recent: int = 6  # readings looked at for flapping / recovered


def _median(xs: list[float]) -> float:
    # the windows hold a handful of readings: sorting a short list beats numpy's per-call overhead 50-fold
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else 0.5 * (s[m - 1] + s[m])


def classify(values: np.ndarray, is_check: bool, p: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per reading: low flag (-1 = could not judge), baseline, noise, judged (bool)."""
    n = len(values)
    low = np.full(n, -1, dtype=np.int8)
    base = np.full(n, np.nan)
    noise = np.full(n, np.nan)
    good: list[float] = []
    for i, v in enumerate(values.tolist()):
        if is_check:
            low[i] = 0 if v >= 1 else 1
            base[i] = 1.0
            continue
        if len(good) >= p.min_base:
            ref = good[-p.window:]
            b = _median(ref)
            rel = 1.4826 * _median([abs(x - b) for x in ref]) / b if b > 0 else 0.0
            nz = max(p.noise_floor, rel)
            base[i], noise[i] = b, nz
            low[i] = 1 if v < b * (1.0 - max(p.drop, p.sigmas * nz)) else 0
        if low[i] != 1 and v == v:  # not NaN
            good.append(v)
    return low, base, noise, low >= 0


def state_of(low: np.ndarray, p: Params) -> tuple[str, int]:
    """(state, index where the current low stretch began or -1)."""
    if low[-1] < 0:
        return "new", -1
    judged = low[low >= 0][-p.recent:]
    changes = int(np.sum(judged[1:] != judged[:-1])) if len(judged) > 1 else 0
    if low[-1] == 1:
        start = len(low) - 1
        while start > 0 and low[start - 1] == 1:
            start -= 1
        if changes >= 3:
            return "flapping", start
        return ("regressed" if len(low) - start >= 2 else "suspect"), start
    if changes >= 3:
        return "flapping", -1
    if (judged == 1).any():
        return "recovered", -1
    return "ok", -1


def compute(df: pd.DataFrame, p: Params | None = None, evidence_n: int = 6) -> pd.DataFrame:
    """`df`: measurements (component_kind, component, node, metric, run_id, run_ts, value) of the judged
    metrics. Returns one state row per series (STATE_SCHEMA columns, run_id = the latest run)."""
    p = p or Params()
    cols = ["component_kind", "component", "node", "metric", "state", "value", "baseline", "noise", "drop",
            "first_seen_run", "first_seen_ts", "last_good_run", "last_good_ts", "low_runs", "evidence", "run_id", "run_ts"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.sort_values(["component", "metric", "run_ts"], kind="stable")
    out = []
    keys = ["component", "metric"]
    sizes = df.groupby(keys, sort=False).size()
    is_check_series = sizes.index.get_level_values("metric") == CHECK_METRIC
    short = sizes[(sizes <= p.min_base) & ~is_check_series]
    if len(short):  # too few readings for any baseline: 'new' in bulk (most pairs of a random-K sweep)
        last = df.groupby(keys, sort=False).tail(1).set_index(keys).loc[short.index].reset_index()
        out.append(pd.DataFrame({
            "component_kind": last["component_kind"], "component": last["component"], "node": last["node"],
            "metric": last["metric"], "state": "new", "value": last["value"], "baseline": np.nan, "noise": np.nan,
            "drop": np.nan, "first_seen_run": None, "first_seen_ts": pd.NaT, "last_good_run": None,
            "last_good_ts": pd.NaT, "low_runs": 0, "evidence": None, "run_id": last["run_id"], "run_ts": last["run_ts"]}))
    long_idx = sizes.index.difference(short.index)
    rows = []
    if len(long_idx):
        sub = df.set_index(keys)
        sub = sub[sub.index.isin(long_idx)].reset_index()  # still sorted by component, metric, run_ts
        comp_a = sub["component"].to_numpy(dtype=object)
        metric_a = sub["metric"].to_numpy(dtype=object)
        kind_a = sub["component_kind"].to_numpy(dtype=object)
        node_a = sub["node"].to_numpy(dtype=object)
        value_a = sub["value"].to_numpy(dtype=float)
        run_a = sub["run_id"].to_numpy(dtype=object)
        ts_a = sub["run_ts"].to_numpy()
        change = np.flatnonzero((comp_a[1:] != comp_a[:-1]) | (metric_a[1:] != metric_a[:-1])) + 1
        bounds = np.concatenate([[0], change, [len(sub)]])
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            metric = metric_a[lo]
            values = value_a[lo:hi]
            low, base, noise, _ = classify(values, metric == CHECK_METRIC, p)
            state, start = state_of(low, p)
            if metric == CHECK_METRIC and state in ("suspect", "regressed"):
                state = "failed"
            run_ids, ts = run_a[lo:hi], ts_a[lo:hi]
            goods = np.flatnonzero(low != 1)  # judged ok, or part of the first baseline
            lg = goods[-1] if len(goods) else None
            b = base[-1]
            first = start if start >= 0 else None
            ev = "; ".join(f"{run_ids[i]}: {values[i]:.4g}{' low' if low[i] == 1 else ''}"
                           for i in range(max(0, len(values) - evidence_n), len(values)))
            rows.append({"component_kind": kind_a[hi - 1], "component": comp_a[lo], "node": node_a[hi - 1],
                         "metric": metric, "state": state, "value": values[-1], "baseline": b, "noise": noise[-1],
                         "drop": (1.0 - values[-1] / b) if np.isfinite(b) and b > 0 else np.nan,
                         "first_seen_run": run_ids[first] if first is not None else None,
                         "first_seen_ts": ts[first] if first is not None else pd.NaT,
                         "last_good_run": run_ids[lg] if lg is not None else None,
                         "last_good_ts": ts[lg] if lg is not None else pd.NaT,
                         "low_runs": int(np.sum(low[-p.recent:] == 1)), "evidence": ev,
                         "run_id": run_ids[-1], "run_ts": ts[-1]})
    if rows:
        out.append(pd.DataFrame(rows))
    res = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)
    return res[cols]


def load_series(con, since_runs: int | None = 30) -> pd.DataFrame:
    """The judged metrics of the last `since_runs` runs (all with None), from a history connection."""
    metrics = ", ".join(f"'{m}'" for m in (*BANDWIDTH_METRICS, CHECK_METRIC))
    recent = "" if since_runs is None else (
        f"AND run_ts >= (SELECT min(run_ts) FROM (SELECT DISTINCT run_ts FROM measurements "
        f"ORDER BY run_ts DESC LIMIT {int(since_runs)}))")
    sql = (f"SELECT component_kind, component, node, metric, run_id, run_ts, median(coalesce(value, "
           f"CASE WHEN status IN ('failed', 'fail') THEN 0 END)) AS value "
           f"FROM measurements WHERE metric IN ({metrics}) AND (value IS NOT NULL OR status IN ('failed', 'fail')) "
           f"{recent} "
           f"GROUP BY ALL")
    return con.execute(sql).df()
