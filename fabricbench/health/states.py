"""Per-component state from the component's own history.

For each series (component, metric) in time order: the baseline is the median of its last `window` good
readings (robust: one bad night does not move it), its noise the relative MAD of those readings (floored). A
reading is *low* when it lies below baseline x (1 - max(drop, sigmas x noise)); a low reading does not enter
the baseline. Check results (metric `check_pass`, 1 or 0) and collectives judged against the topology (metric
`topology_pass`) are low when 0, whatever the history.

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
from datetime import timedelta

import numpy as np
import pandas as pd

BANDWIDTH_METRICS = ("bw_bytes_per_second", "tx_bytes_per_second", "rx_bytes_per_second", "cross_leaf_bytes_per_second",
                     "busbw_bytes_per_second")
CHECK_METRIC = "check_pass"
# pass (1) / fail (0) by an absolute rule, whatever the history: node checks, collectives vs the topology
ABSOLUTE_METRICS = (CHECK_METRIC, "topology_pass")


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


def classify_matrix(values: np.ndarray, p: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`classify` for many bandwidth series at once: `values` is series x time, NaN where a series has no
    reading (shorter series are padded at the start). The same rule, one time step at a time over all series."""
    s, t = values.shape
    low = np.full((s, t), -1, dtype=np.int8)
    base = np.full((s, t), np.nan)
    noise = np.full((s, t), np.nan)
    buf = np.full((s, p.window), np.nan)  # each series' last `window` good readings, newest last
    count = np.zeros(s, dtype=np.int64)
    rows = np.arange(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(t):
            v = values[:, j]
            have = ~np.isnan(v)
            judge = have & (count >= p.min_base)
            if judge.any():
                b = np.nanmedian(buf[judge], axis=1)
                rel = 1.4826 * np.nanmedian(np.abs(buf[judge] - b[:, None]), axis=1) / b
                nz = np.maximum(p.noise_floor, np.where(b > 0, rel, 0.0))
                base[judge, j], noise[judge, j] = b, nz
                low[judge, j] = (v[judge] < b * (1.0 - np.maximum(p.drop, p.sigmas * nz))).astype(np.int8)
            good = have & (low[:, j] != 1)
            if good.any():
                g = rows[good]
                buf[g, :-1] = buf[g, 1:]
                buf[g, -1] = v[good]
                count[g] += 1
    return low, base, noise


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
    metrics; `load_series` output (sorted, with `n` = the series' length, short series reduced to their last
    reading) or any frame (sorted and counted here). Returns one state row per series (STATE_SCHEMA columns,
    run_id = the series' latest run)."""
    p = p or Params()
    cols = ["component_kind", "component", "node", "metric", "state", "value", "baseline", "noise", "drop",
            "first_seen_run", "first_seen_ts", "last_good_run", "last_good_ts", "low_runs", "evidence", "run_id", "run_ts"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    if "n" not in df.columns:
        df = df.sort_values(["component", "metric", "run_ts"], kind="stable")
        df = df.assign(n=df.groupby(["component", "metric"], sort=False)["value"].transform("size"))
    comp_a = df["component"].to_numpy(dtype=object)
    metric_a = df["metric"].to_numpy(dtype=object)
    n_a = df["n"].to_numpy()
    is_check = np.isin(metric_a, ABSOLUTE_METRICS)
    short = (n_a <= p.min_base) & ~is_check
    out = []
    if short.any():  # too few readings for any baseline: 'new' in bulk (most pairs of a random-K sweep)
        last_of_series = np.ones(len(df), dtype=bool)
        last_of_series[:-1] = (comp_a[1:] != comp_a[:-1]) | (metric_a[1:] != metric_a[:-1])
        last = df[short & last_of_series]
        out.append(pd.DataFrame({
            "component_kind": last["component_kind"].to_numpy(dtype=object), "component": last["component"].to_numpy(dtype=object),
            "node": last["node"].to_numpy(dtype=object), "metric": last["metric"].to_numpy(dtype=object), "state": "new",
            "value": last["value"].to_numpy(dtype=float), "baseline": np.nan, "noise": np.nan, "drop": np.nan,
            "first_seen_run": None, "first_seen_ts": pd.NaT, "last_good_run": None, "last_good_ts": pd.NaT,
            "low_runs": 0, "evidence": None, "run_id": last["run_id"].to_numpy(dtype=object),
            "run_ts": last["run_ts"].to_numpy()}))
    sub = df[~short]
    rows = []
    if len(sub):
        comp_a = sub["component"].to_numpy(dtype=object)
        metric_a = sub["metric"].to_numpy(dtype=object)
        kind_a = sub["component_kind"].to_numpy(dtype=object)
        node_a = sub["node"].to_numpy(dtype=object)
        value_a = sub["value"].to_numpy(dtype=float)
        run_a = sub["run_id"].to_numpy(dtype=object)
        ts_a = sub["run_ts"].to_numpy()
        change = np.flatnonzero((comp_a[1:] != comp_a[:-1]) | (metric_a[1:] != metric_a[:-1])) + 1
        bounds = np.concatenate([[0], change, [len(sub)]])
        lengths = np.diff(bounds)
        # every bandwidth series judged at once (series x time, right-aligned); checks one by one (absolute rule)
        bw = np.flatnonzero(~np.isin(metric_a[bounds[:-1]], ABSOLUTE_METRICS))
        mat_of = {}
        if len(bw):
            width = int(lengths[bw].max())
            mat = np.full((len(bw), width), np.nan)
            for r, k in enumerate(bw.tolist()):
                mat[r, width - lengths[k]:] = value_a[bounds[k]:bounds[k + 1]]
            m_low, m_base, m_noise = classify_matrix(mat, p)
            mat_of = {k: r for r, k in enumerate(bw.tolist())}
        for k, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
            metric = metric_a[lo]
            values = value_a[lo:hi]
            if k in mat_of:
                r, n = mat_of[k], hi - lo
                low, base, noise = m_low[r, -n:], m_base[r, -n:], m_noise[r, -n:]
            else:
                low, base, noise, _ = classify(values, metric in ABSOLUTE_METRICS, p)
            state, start = state_of(low, p)
            if metric in ABSOLUTE_METRICS and state in ("suspect", "regressed"):
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


def load_series(con, pair_runs: int | None = 30, component_runs: int | None = 120, min_base: int = Params.min_base,
                check_days: float = 14.0) -> pd.DataFrame:
    """The judged metrics, sorted by series and time, from a history connection: pairs over their last
    `pair_runs` runs, every other component (NIC, uplink, checks: a few per node) over `component_runs` runs, so
    a regression stays one for months, not just while its good readings are in a short window; node checks over
    their last `check_days` days (they may run hourly). A failed
    measurement is a reading of 0. Series too short to judge come back as their last reading only (state 'new'),
    except pairs: a rotation of K rounds a night meets each pair once in ceil((n-1)/K) nights, and a pair with nothing to compare with gets
    no state row at all (its readings still count in its NIC's median)."""
    metrics = ", ".join(f"'{m}'" for m in (*BANDWIDTH_METRICS, *ABSOLUTE_METRICS))
    absolute = ", ".join(f"'{m}'" for m in ABSOLUTE_METRICS)

    def since(k):
        # the cutoff as a literal: DuckDB then skips whole files (one run each) by their run_ts statistics.
        # Counted over sweeps only: hourly node checks in the same store must not shorten the sweeps' window.
        if k is None:
            return "TRUE"
        cut = con.execute(f"SELECT min(run_ts) FROM (SELECT DISTINCT run_ts FROM measurements WHERE source = 'sweep' "
                          f"ORDER BY run_ts DESC LIMIT {int(k)})").fetchone()[0]
        return "TRUE" if cut is None else f"run_ts >= TIMESTAMPTZ '{cut.isoformat()}'"

    last_check = con.execute("SELECT max(run_ts) FROM measurements WHERE source = 'check'").fetchone()[0]
    checks = "FALSE" if last_check is None else \
        f"run_ts >= TIMESTAMPTZ '{(last_check - timedelta(days=check_days)).isoformat()}'"
    window = (f"(source = 'sweep' AND component_kind = 'pair' AND {since(pair_runs)}) OR "
              f"(source IN ('sweep', 'collective') AND component_kind <> 'pair' AND {since(component_runs)}) OR "
              f"(source = 'check' AND {checks})")
    # one row per (component, metric, run) by construction (rows.py takes each pair's median over repeats)
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE _series_rows AS
    WITH m AS (
      SELECT component_kind, component, node, metric, run_id, run_ts,
             coalesce(value, CASE WHEN status IN ('failed', 'fail') THEN 0 END) AS value
      FROM measurements
      WHERE metric IN ({metrics}) AND (value IS NOT NULL OR status IN ('failed', 'fail'))
        AND ({window})),
    s AS (
      SELECT *, count(*) OVER (PARTITION BY component, metric) AS n,
             row_number() OVER (PARTITION BY component, metric ORDER BY run_ts DESC) AS rn
      FROM m)
    SELECT * FROM s
    WHERE n > {int(min_base)} OR metric IN ({absolute}) OR (rn = 1 AND component_kind <> 'pair')""")
    # Strings once per series and per run, numbers per row: turning half a million rows of strings into Python
    # objects would cost more than judging them.
    series = con.execute("SELECT component, metric, any_value(component_kind) AS kind, arg_max(node, run_ts) AS node, "
                         "any_value(n) AS n FROM _series_rows GROUP BY component, metric ORDER BY component, metric").fetchnumpy()
    runs = con.execute("SELECT run_ts, any_value(run_id) AS run_id FROM _series_rows GROUP BY run_ts ORDER BY run_ts").fetchnumpy()
    con.execute("CREATE OR REPLACE TEMP TABLE _series_ids AS SELECT component, metric, "
                "row_number() OVER (ORDER BY component, metric) - 1 AS sid FROM (SELECT DISTINCT component, metric FROM _series_rows)")
    con.execute("CREATE OR REPLACE TEMP TABLE _run_ids AS SELECT run_ts, row_number() OVER (ORDER BY run_ts) - 1 AS rid "
                "FROM (SELECT DISTINCT run_ts FROM _series_rows)")
    body = con.execute("SELECT i.sid, r.rid, s.value FROM _series_rows s JOIN _series_ids i USING (component, metric) "
                       "JOIN _run_ids r USING (run_ts) ORDER BY i.sid, r.rid").fetchnumpy()
    sid, rid = np.asarray(body["sid"], dtype=np.int64), np.asarray(body["rid"], dtype=np.int64)

    def obj(a):
        return np.asarray(a, dtype=object)

    return pd.DataFrame({"component_kind": obj(series["kind"])[sid], "component": obj(series["component"])[sid],
                         "node": obj(series["node"])[sid], "metric": obj(series["metric"])[sid],
                         "run_id": obj(runs["run_id"])[rid], "run_ts": np.asarray(runs["run_ts"])[rid],
                         "value": np.asarray(body["value"], dtype=float), "n": np.asarray(series["n"])[sid]})
