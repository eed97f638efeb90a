"""History store, states on generated series with known change points, Prometheus file, reports, plan, scrontab."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from fabricbench.health import history as hist
from fabricbench.health import plan as plan_mod
from fabricbench.health import prom, report, schedule, states
from fabricbench.health.rows import _row

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def generated(n_series=400, n_runs=20, noise=0.03, seed=7):
    """Series with a known change point in half of them: a drop of 20-50% from a random run on, sustained."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for s in range(n_series):
        level = rng.uniform(5e9, 50e9)
        change = int(rng.integers(3, n_runs - 2)) if s % 2 == 0 else None
        depth = rng.uniform(0.2, 0.5)
        truth[f"n{s}/nic"] = (change, depth)
        for r in range(n_runs):
            v = level * np.exp(rng.normal(0, noise))
            if change is not None and r >= change:
                v *= 1 - depth
            rows.append({"component_kind": "nic", "component": f"n{s}/nic", "node": f"n{s}", "metric": "tx_bytes_per_second",
                         "run_id": f"r{r:03d}", "run_ts": pd.Timestamp(T0 + timedelta(days=r)), "value": v})
    return pd.DataFrame(rows), truth


def score(df, truth, upto):
    """Detect with the history up to run `upto`; a series counts as flagged when suspect/regressed."""
    st = states.compute(df[df["run_ts"] <= pd.Timestamp(T0 + timedelta(days=upto))])
    flagged = set(st[st["state"].isin(["suspect", "regressed"])]["component"])
    actual = {c for c, (ch, _) in truth.items() if ch is not None and ch <= upto}
    tp = len(flagged & actual)
    return tp / max(len(flagged), 1), tp / max(len(actual), 1), st


def test_regression_detection_precision_recall():
    df, truth = generated()
    precision, recall, st = score(df, truth, 19)
    assert precision >= 0.98 and recall >= 0.98, (precision, recall)
    # first seen is the change point itself for a sustained drop
    reg = st[st["state"] == "regressed"].set_index("component")
    hits = [reg.loc[c, "first_seen_run"] == f"r{truth[c][0]:03d}" for c in reg.index]
    assert np.mean(hits) >= 0.95


def test_state_sequence_new_suspect_regressed_recovered_flapping():
    vals = [10, 10.2, 9.9, 10.1, 6, 6, 10, 10]
    seq = []
    for i in range(1, len(vals) + 1):
        df = pd.DataFrame({"component_kind": "nic", "component": "a/nic", "node": "a", "metric": "tx_bytes_per_second",
                           "run_id": [f"r{j}" for j in range(i)], "value": vals[:i],
                           "run_ts": [pd.Timestamp(T0 + timedelta(days=j)) for j in range(i)]})
        seq.append(states.compute(df).iloc[0])
    assert [s["state"] for s in seq] == ["new", "new", "ok", "ok", "suspect", "regressed", "recovered", "recovered"]
    assert seq[5]["first_seen_run"] == "r4" and seq[5]["last_good_run"] == "r3"
    assert abs(seq[5]["drop"] - 0.4) < 0.02
    flap = [10, 10, 10, 6, 10, 6, 10, 6]
    df = pd.DataFrame({"component_kind": "nic", "component": "b/nic", "node": "b", "metric": "tx_bytes_per_second",
                       "run_id": [f"r{j}" for j in range(8)], "value": flap,
                       "run_ts": [pd.Timestamp(T0 + timedelta(days=j)) for j in range(8)]})
    assert states.compute(df).iloc[0]["state"] == "flapping"


def _store(tmp_path, runs=4, bad_from=2):
    d = tmp_path / "hist"
    for r in range(runs):
        ts = T0 + timedelta(days=r)
        rid = f"run{r}"
        data = []
        for node in ("a", "b", "c", "d"):
            v = 40e9 * (0.6 if node == "c" and r >= bad_from else 1.0)
            data.append(_row(rid, ts, "sweep", "nic", f"{node}/nic", node, "tx_bytes_per_second", v, "bytes_per_second", "ok"))
            for p in ("a", "b", "c", "d"):
                if p != node:
                    pv = 40e9 * (0.6 if "c" in (node, p) and r >= bad_from else 1.0)
                    data.append(_row(rid, ts, "sweep", "pair", f"{node}->{p}", node, "bw_bytes_per_second", pv,
                                     "bytes_per_second", "ok", partner=p))
        hist.append_measurements(d, rid, "sweep", data)
        con = hist.connect(d)
        st = states.compute(states.load_series(con))
        st["schema_version"], st["run_id"], st["run_ts"] = 1, rid, pd.Timestamp(ts)
        hist.write_states(d, rid, _as_table(st))
        hist.write_run(d, rid, {"run_id": rid, "run_ts": ts.isoformat(), "kind": "sweep", "nodes": list("abcd")})
    return d


def _as_table(st):
    import pyarrow as pa

    for c in ("first_seen_ts", "last_good_ts"):
        st[c] = pd.to_datetime(st[c], utc=True)
    return pa.Table.from_pandas(st[[f.name for f in hist.STATE_SCHEMA]], schema=hist.STATE_SCHEMA, preserve_index=False)


def test_history_query_and_states(tmp_path):
    d = _store(tmp_path)
    t = hist.query(d, "SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM measurements").to_pylist()[0]
    assert t == {"n": 4 * (4 + 12), "runs": 4}
    st = report.latest_states(hist.connect(d))
    c = st[st["component"] == "c/nic"].iloc[0]
    assert c["state"] == "regressed" and c["first_seen_run"] == "run2" and c["last_good_run"] == "run1"
    assert set(st[st["component_kind"] == "nic"]["state"]) == {"ok", "regressed"}
    from fabricbench.errors import UsageError

    with pytest.raises(UsageError, match="query failed"):
        hist.query(d, "SELECT nope FROM measurements")


def test_prom_file_parses(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    d = _store(tmp_path)
    con = hist.connect(d)
    st = report.latest_states(con)
    latest = con.execute("SELECT * FROM measurements WHERE run_id = 'run3'").df()
    path = prom.write(tmp_path / "prom", st, latest, 1.7e9, 12.5)
    fams = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    nic = {(s.labels["node"], s.labels["direction"]): s.value for s in fams["fabricbench_health_nic_bandwidth_bytes_per_second"].samples}
    assert nic[("c", "tx")] == pytest.approx(24e9) and nic[("a", "tx")] == pytest.approx(40e9)
    state = [s for s in fams["fabricbench_health_component_state"].samples if s.labels["component"] == "c/nic"]
    assert state[0].labels["state"] == "regressed" and state[0].value == 1
    assert fams["fabricbench_health_last_run_timestamp_seconds"].samples[0].value == 1.7e9
    assert not list((tmp_path / "prom").glob("*.tmp*"))  # written through a rename


def test_report_html_md_junit(tmp_path):
    d = _store(tmp_path)
    data = report.gather(d, timedelta(days=3650))
    page = report.render_html(data)
    assert page.count("data:image/png;base64,") >= 5  # 4 NIC trends + the heatmap, embedded
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "<td>regressed</td><td>c/nic</td>" in page
    assert "| regressed | c/nic |" in report.render_md(data)
    suite = ET.fromstring(report.render_junit(data))
    assert suite.get("failures") == "1"
    assert report.exit_code(data) == 1


def test_plan_budget_and_rotation():
    nodes = [f"n{i:02d}" for i in range(16)]
    p = plan_mod.make_plan(nodes, budget_s=200, round_s=10, overhead_s=20)
    assert p.pattern == "circle" and p.rounds == 15 and len(p.pairs) == 120
    small = plan_mod.make_plan(nodes, budget_s=60, round_s=10, overhead_s=20, gpus_per_node=8)
    assert small.pattern == "rotation" and small.partners == 4 and small.est_wall_s == 60
    assert small.gpu_hours == pytest.approx(16 * 8 * 60 / 3600)
    # Exact rotation: any ceil(15/4) = 4 consecutive nights meet every pair, each night 4 new partners per node
    for start in (0, 3, 11):
        met = set()
        for night in range(start, start + small.min_nights_all_pairs):
            p = plan_mod.make_plan(nodes, 60, 10, 20, night=night)
            pairs = {tuple(sorted(x)) for x in p.pairs}
            assert len(pairs) == 4 * 8  # 4 rounds of 8 disjoint pairs, no pair twice in a night
            assert all(sum(n in x for x in pairs) == 4 for n in nodes)
            met |= pairs
        assert len(met) == 120, (start, len(met))
    assert small.min_nights_all_pairs == 4
    odd = plan_mod.make_plan(nodes[:15], 60, 10, 20, night=0)  # 15 nodes: 15 rounds of 7 pairs (one sits out)
    assert odd.min_nights_all_pairs == 4
    assert len({tuple(sorted(x)) for n in range(4) for x in plan_mod.make_plan(nodes[:15], 60, 10, 20, night=n).pairs}) == 105
    with pytest.raises(Exception, match="does not fit one round"):
        plan_mod.make_plan(nodes, budget_s=25, round_s=10, overhead_s=20)


def test_scrontab_entry_and_merge():
    block = schedule.entry("0 2 * * *", ["--nodelist", "lab[1-6]", "--budget", "20m"], "lab", "60", "/usr/bin/python3")
    assert "#SCRON --time=60 --job-name=fabricbench-health --partition=lab" in block
    assert "0 2 * * * /usr/bin/python3 -m fabricbench health run --nodelist 'lab[1-6]' --budget 20m" in block
    mine = "MAILTO=x\n30 * * * * other job\n"
    merged = schedule.merge(schedule.merge(mine, block), block)
    assert merged.count(schedule.BEGIN) == 1 and "30 * * * * other job" in merged
    with pytest.raises(Exception, match="five cron fields"):
        schedule.entry("every night", [], None, "60", "python3")


def test_matrix_classifier_matches_the_series_rule():
    rng = np.random.default_rng(3)
    p = states.Params()
    series = [40e9 * np.exp(rng.normal(0, 0.05, n)) * np.where(np.arange(n) >= n // 2, rng.choice([1, 0.6]), 1)
              for n in rng.integers(3, 30, 50)]
    width = max(len(s) for s in series)
    mat = np.full((len(series), width), np.nan)
    for i, s in enumerate(series):
        mat[i, width - len(s):] = s
    low, base, _ = states.classify_matrix(mat, p)
    for i, s in enumerate(series):
        one_low, one_base, _, _ = states.classify(s, False, p)
        assert (low[i, width - len(s):] == one_low).all()
        assert np.allclose(base[i, width - len(s):], one_base, equal_nan=True)


def test_hourly_node_checks_do_not_shorten_the_sweep_window(tmp_path):
    d = _store(tmp_path, runs=4, bad_from=2)
    for h in range(200):  # 200 hourly check runs after the sweeps: the sweeps' window counts sweeps only
        ts = T0 + timedelta(days=4, hours=h)
        hist.append_measurements(d, f"chk{h:03d}", "check", [
            _row(f"chk{h:03d}", ts, "check", "node", "a/check:gpus", "a", "check_pass", 0.0 if h >= 198 else 1.0,
                 "ratio", "fail" if h >= 198 else "pass")])
    st = states.compute(states.load_series(hist.connect(d), component_runs=4)).set_index(["component", "metric"])
    assert st.loc[("c/nic", "tx_bytes_per_second"), "state"] == "regressed"
    assert st.loc[("a/check:gpus", "check_pass"), "state"] == "failed"
    assert st.loc[("a/check:gpus", "check_pass"), "first_seen_run"] == "chk198"
