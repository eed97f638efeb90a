"""Collectives over subsets in `fabricbench health run` (issue 12, section 1): subset choice, budget fit, estimates,
judgement against the topology, history rows and the states/prom/report they feed. No lab here
(tests/test_health_collectives_lab.py runs them on the lab's real Slurm)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from fabricbench.health import collectives as coll
from fabricbench.health import history as hist
from fabricbench.health import prom, report, states

REPO = Path(__file__).resolve().parents[1]
LAB_TOPO = str(REPO / "topologies" / "fabric-lab.yaml")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LEAF_OF = {"lab1": "leaf1", "lab2": "leaf1", "lab3": "leaf2", "lab4": "leaf2", "lab5": "leaf3", "lab6": "leaf3"}
LAB = [f"lab{i}" for i in range(1, 7)]


def names(subsets):
    return [s.name for s in subsets]


def test_leaves_and_all_with_a_topology_rotated_by_night():
    night0 = coll.choose_subsets(LAB, LEAF_OF, night=0)
    assert names(night0) == ["all", "leaf1", "leaf2", "leaf3"]
    assert night0[0].nodes == LAB and night0[0].kind == "all"
    assert night0[2].nodes == ["lab3", "lab4"] and night0[2].kind == "leaf"
    assert names(coll.choose_subsets(LAB, LEAF_OF, night=1)) == ["all", "leaf2", "leaf3", "leaf1"]
    # a leaf left with one node in service has no subset of its own; it is still in the all-node group
    swept = [n for n in LAB if n != "lab4"]
    subsets = coll.choose_subsets(swept, LEAF_OF)
    assert names(subsets) == ["all", "leaf1", "leaf3"] and "lab3" in subsets[0].nodes
    # every node on one leaf: that leaf is the only group (no duplicate 'all')
    assert [(s.name, s.nodes) for s in coll.choose_subsets(["lab1", "lab2"], LEAF_OF)] == [("leaf1", ["lab1", "lab2"])]
    assert coll.choose_subsets(["lab1"], LEAF_OF) == []
    assert coll.choose_subsets(LAB, LEAF_OF)[1].component() == "collective:all_reduce:leaf1"


def test_fixed_size_groups_without_a_topology_shift_on_odd_nights():
    nodes = [f"n{i:02d}" for i in range(10)]
    even = coll.choose_subsets(nodes, None, night=0, group_size=4)
    assert [s.nodes for s in even[1:]] == [nodes[0:4], nodes[4:8], nodes[8:10]]
    assert names(even) == ["all", "n[00-03]", "n[04-07]", "n[08-09]"]
    odd = coll.choose_subsets(nodes, None, night=1, group_size=4)
    groups = sorted(tuple(s.nodes) for s in odd[1:])
    # boundaries shifted by half a group: n02..n05, n06..n09, n00..n01
    assert groups == [tuple(nodes[0:2]), tuple(nodes[2:6]), tuple(nodes[6:10])]
    assert names(odd)[1] == "n[06-09]"  # and the first group to get the budget rotates
    # a last group of one node joins the one before it
    nine = coll.choose_subsets(nodes[:9], None, night=0, group_size=4)
    assert [len(s.nodes) for s in nine[1:]] == [4, 5]
    # no more nodes than a group: the all-node group only
    assert names(coll.choose_subsets(nodes[:4], None, group_size=4)) == ["all"]


def test_budget_fit_waves_and_left_out():
    subsets = coll.choose_subsets(LAB, LEAF_OF)
    for s, est in zip(subsets, (30, 20, 25, 20)):
        s.est_s = est
    conc = coll.fit(subsets, 100, concurrent=True)
    assert [[s.name for s in w] for w in conc.waves] == [["all"], ["leaf1", "leaf2", "leaf3"]]
    assert conc.est_s == 55 and not conc.left_out  # a wave lasts as long as its longest subset
    seq = coll.fit(subsets, 90, concurrent=False)
    assert names(seq.subsets) == ["all", "leaf1", "leaf2"] and names(seq.left_out) == ["leaf3"] and seq.est_s == 75
    assert names(coll.fit(subsets, 29, concurrent=True).subsets) == ["leaf1", "leaf2", "leaf3"]  # what fits runs
    assert coll.fit(subsets, 19, concurrent=True).waves == []
    small = coll.fit(subsets, 50, concurrent=True)
    assert names(small.subsets) == ["all", "leaf1", "leaf3"] and names(small.left_out) == ["leaf2"]
    text = small.describe()
    assert "collectives: all_reduce at 64M over 3 subset(s) in 2 wave(s)" in text and "left out (budget): leaf2" in text
    assert "none fit the budget" in coll.fit(subsets, 5, True).describe()


def test_estimates_from_the_subsets_own_history():
    subsets = coll.choose_subsets(LAB, LEAF_OF)
    assert coll.estimates([], subsets).startswith("defaults") and {s.est_s for s in subsets} == {coll.DEFAULT_SUBSET_S}
    past = [{"kind": "sweep", "collectives": {"results": [
        {"component": "collective:all_reduce:all", "seconds": s}, {"component": "collective:all_reduce:leaf1", "seconds": 8.0}]}}
        for s in (12.0, 14.0, 40.0)]
    how = coll.estimates(past, subsets)
    assert subsets[0].est_s == 14.0 and subsets[1].est_s == 8.0  # median of its own last runs
    assert subsets[2].est_s == pytest.approx(24.0)  # never run: the last run's median
    assert "2 subset(s) from their own last runs" in how


def test_argv_slurm_and_local(tmp_path):
    s = coll.choose_subsets(LAB, LEAF_OF)[2]
    slurm = coll.argv_for(s, coll.Launch(local=False, size="4M", iters=3, partition="p", reservation="r1"),
                          tmp_path / "leaf2", 200)
    assert slurm[1:5] == ["-m", "fabricbench", "submit", "all_reduce"]
    joined = " ".join(slurm)
    for part in ("--nodelist lab3,lab4", "--ntasks-per-node 1", "-b 4M -e 4M -n 3", "--reservation r1", "-p p",
                 "--time 5", "-T 200"):
        assert part in joined, part
    gpu = " ".join(coll.argv_for(s, coll.Launch(local=False, gpus_per_node=8), tmp_path, 60))
    assert "--ntasks-per-node 8" in gpu and "--gpus-per-node 8" in gpu
    local = coll.argv_for(s, coll.Launch(local=True), tmp_path, 60)
    assert local[3:7] == ["run", "all_reduce", "--nprocs", "2"] and "--nodelist" not in local


def _result(name, nodes, busbw, size=4 << 20, error=""):
    sub = coll.Subset(name, nodes, "all" if name == "all" else "leaf")
    return coll.Result(sub, 12.0, busbw_gbps=None if error else busbw, size=size, nranks=len(nodes), error=error)


def test_judged_against_the_topology_when_bandwidth_bound():
    from fabricbench.analyze.topo_adapter import load_fabric

    fabric = load_fabric(LAB_TOPO)  # 400 Mb/s lab: all_reduce over 6 nodes 0.0399 GB/s, over 2 nodes 0.0479
    res = [_result("all", LAB, 0.012), _result("leaf2", ["lab3", "lab4"], 0.046),
           _result("leaf1", ["lab1", "lab2"], 0.046, size=4096), _result("leaf3", ["lab5", "lab6"], None, error="exit 1: x")]
    coll.judge(res, fabric, 0)
    low, leaf2, tiny, failed = res
    assert low.topology_pass is False and low.ratio == pytest.approx(0.012 / 0.0399167, rel=1e-3)
    assert leaf2.topology_pass is True and leaf2.expected_gbps == pytest.approx(0.0479)
    assert tiny.topology_pass is None and "latency-bound" in tiny.not_judged
    assert failed.topology_pass is None
    lines = coll.summary_lines(res)
    assert "(LOW)" in lines[0] and "FAILED: exit 1: x" in lines[3]
    coll.judge([r := _result("all", LAB, 0.03)], None, 0)  # no topology: history only
    assert r.topology_pass is None


def test_rows_into_history_states_prom_and_report(tmp_path):
    from fabricbench.analyze.topo_adapter import load_fabric
    from prometheus_client.parser import text_string_to_metric_families

    fabric = load_fabric(LAB_TOPO)
    d = tmp_path / "h"
    readings = [(0.045, 0.046, 0.046), (0.046, 0.046, 0.045), (0.015, 0.046, None)]  # run 3: all low, leaf3 fails
    for i, (a, l1, l3) in enumerate(readings):
        res = [_result("all", LAB, a), _result("leaf1", ["lab1", "lab2"], l1),
               _result("leaf3", ["lab5", "lab6"], l3, error="" if l3 else "exit 1: Connection refused")]
        coll.judge(res, fabric, 0)
        rows = coll.rows(res, f"run{i}", T0 + timedelta(days=i))
        hist.append_measurements(d, f"run{i}", "collective", rows)
    con = hist.connect(d)
    m = con.execute("SELECT component, metric, status, detail FROM measurements WHERE run_id = 'run2' "
                    "ORDER BY component, metric").df()
    assert set(m["component"]) == {"collective:all_reduce:all", "collective:all_reduce:leaf1", "collective:all_reduce:leaf3"}
    failed = m[m["component"] == "collective:all_reduce:leaf3"]
    assert list(failed["status"]) == ["failed"] and "Connection refused" in failed["detail"].iloc[0]
    assert list(failed["metric"]) == ["busbw_bytes_per_second"]  # a failed run is not judged against the topology
    st = states.compute(states.load_series(con))
    got = {(r.component.split(":")[-1], r.metric): r.state for r in st.itertuples()}
    assert got[("all", "busbw_bytes_per_second")] == "suspect"  # low against its own history (one run)
    assert got[("all", "topology_pass")] == "failed"  # and below the topology's bar
    assert got[("leaf1", "busbw_bytes_per_second")] == "ok" and got[("leaf1", "topology_pass")] == "ok"
    assert got[("leaf3", "busbw_bytes_per_second")] == "suspect"  # failed: a reading of 0, evidence to retest
    assert report.exit_code_of(st, runs=3) == 1
    latest = con.execute("SELECT * FROM measurements WHERE run_id = 'run2'").df()
    path = prom.write(tmp_path / "prom", st, latest, 1.7e9, 5.0)
    fams = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    busbw = {s.labels["subset"]: s.value for s in fams["fabricbench_health_collective_busbw_bytes_per_second"].samples}
    assert busbw == {"all": pytest.approx(0.015e9), "leaf1": pytest.approx(0.046e9)}
    assert "fabricbench_health_node_check" not in fams or not fams["fabricbench_health_node_check"].samples
    state = [s for s in fams["fabricbench_health_component_state"].samples
             if s.labels["component"] == "collective:all_reduce:all" and s.labels["metric"] == "topology_pass"]
    assert state[0].labels["state"] == "failed" and state[0].labels["node"] == ""
    from fabricbench.health.runner import _state_table

    hist.write_states(d, "run2", _state_table(st, "run2", T0 + timedelta(days=2)))
    data = report.gather(d, timedelta(days=3650))
    assert "collective:all_reduce:all" in set(data["trend"]["component"])
    assert "collective:all_reduce:all" in report.render_md(data)


def test_collectives_never_drain(tmp_path):
    """The lifecycle reads NIC series only: a low collective alone makes no drain action."""
    from fabricbench.health import runner

    st = pd.DataFrame([{"component_kind": "collective", "component": "collective:all_reduce:all", "node": None,
                        "metric": "busbw_bytes_per_second", "state": "regressed", "drop": 0.6}])
    opts = runner.RunOptions(nodes=LAB, budget_s=60, drain=True, dry_run=True, echo=lambda *_: None)
    assert runner._lifecycle(opts, st, hist.connect(tmp_path / "none"), LAB, [], "r", False) == []


def _cli(*args, timeout=240):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    import os

    env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-m", "fabricbench", "health", "run", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO), env=env)


def test_plan_and_dry_run_print_the_collectives(tmp_path):
    res = _cli("--local", "--nodes", "6", "--budget", "10m", "--history", str(tmp_path / "h"), "--dry-run",
               "--collective-size", "4M")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "collectives: all_reduce at 4M over 3 subset(s) in 3 wave(s): all (6 nodes, ~20 s)" in out
    assert "total estimate:" in out and "-m fabricbench run all_reduce --nprocs 6 -b 4M -e 4M" in out
    off = _cli("--local", "--nodes", "6", "--budget", "10m", "--history", str(tmp_path / "h"), "--dry-run",
               "--no-collectives")
    assert "collectives: off (--no-collectives)" in off.stdout and "fabricbench run all_reduce" not in off.stdout
    # auto: a budget the sweep fills leaves nothing for them; --collectives takes their time from the sweep
    auto = _cli("--local", "--nodes", "6", "--budget", "60s", "--history", str(tmp_path / "h"), "--dry-run")
    assert "none fit the budget" in auto.stdout and "rotation-" in auto.stdout
    on = _cli("--local", "--nodes", "6", "--budget", "60s", "--history", str(tmp_path / "h"), "--dry-run",
              "--collectives")
    assert "rotation-4" in auto.stdout and "rotation-2" in on.stdout, (auto.stdout, on.stdout)
    assert "over 1 subset(s) in 1 wave(s): all (6 nodes" in on.stdout
    bad = _cli("--local", "--nodes", "6", "--history", str(tmp_path / "h"), "--dry-run", "--collective-size", "1.5M")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_local_run_records_the_collectives(tmp_path):
    """--local end to end: sweep, then the subsets (4 nodes: one group), history rows and what it spent."""
    res = _cli("--local", "--nodes", "4", "--budget", "4m", "--history", str(tmp_path / "h"), "--out",
               str(tmp_path / "r"), "-b", "64K", "-e", "64K", "-n", "2", "--collective-size", "256K")
    assert res.returncode in (0, 3), res.stdout + res.stderr
    assert "collective collective:all_reduce:all (4 nodes" in res.stdout and "collectives: spent" in res.stdout
    rows = hist.query(tmp_path / "h", "SELECT component, status, value FROM measurements WHERE source = "
                      "'collective'").to_pylist()
    assert rows and rows[0]["component"] == "collective:all_reduce:all" and rows[0]["status"] == "ok"
    assert rows[0]["value"] > 0
    meta = hist.runs(tmp_path / "h")[-1]["collectives"]
    assert meta["planned"] == ["all"] and meta["results"][0]["seconds"] > 0 and meta["spent_s"] > 0
