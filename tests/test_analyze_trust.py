"""Issue 9, "must hold" 1-4, 9, 10: verdicts an operator can trust. Each test builds its input from the simulator
(or by hand) and checks the judgement: healthy is healthy, patterns not magnitudes, contention is not a fault,
nothing judged never passes, drains only what evidence names."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fabricbench.analyze import criteria, report_junit, report_text
from fabricbench.analyze.analysis import analyze
from fabricbench.analyze.evidence import Evidence, sources
from fabricbench.analyze.importers import load
from fabricbench.analyze.simulate import SimSpec, parse_fault, simulate, write
from fabricbench.analyze.topo_adapter import fabric_from_leaves
from fabricbench.analyze.weigh import weigh
from fabricbench.results import write_results


def sim(tmp_path, name, faults=(), **kw):
    kw.setdefault("nodes", 24)
    kw.setdefault("leaves", 3)
    spec = SimSpec(faults=[parse_fault(f) for f in faults], **kw)
    frame, truth = simulate(spec)
    return spec, frame, truth


def analyze_frame(tmp_path, name, frame, hosts, fabric=None, info=None):
    out = tmp_path / name
    write_results(out, frame, dict({"hosts": hosts}, **(info or {})))
    return analyze(load(out), fabric)


def faults(res):
    return sorted((v.kind, v.component) for v in res.faults())


# ---------------------------------------------------------------- 1. a healthy fabric is healthy

def test_single_slow_latency_reading_and_one_failed_pair_do_not_fail(tmp_path):
    spec, frame, truth = sim(tmp_path, "h", repeats=1, seed=3)
    frame = frame.copy()
    frame["status"] = frame["status"].astype(str)
    frame["error"] = None
    first = frame.index[(frame["node_a"] == "node0002") & (frame["node_b"] == "node0009")][0]
    frame.loc[first, "latency_us"] *= 40  # one slow latency reading
    hit = (frame["node_a"] == "node0004") & (frame["node_b"] == "node0011") & (frame["direction"].astype(str) == "a->b")
    assert hit.any()
    frame.loc[hit, ["status", "error"]] = ["failed", "NCCL timeout"]  # one transient failed pair (one round)
    frame.loc[hit, "algbw_gbps"] = np.nan
    res = analyze_frame(tmp_path, "h", frame, spec.hosts(), fabric_from_leaves(truth["leaves"]))
    assert res.exit_code == 0, [(v.kind, v.component, v.confidence) for v in res.verdicts]
    assert res.retests  # the failed pair is listed to retest
    ev = criteria.evaluate(criteria.default(), res)
    assert ev["cluster"]["pass"]


def test_two_chance_dips_of_one_pair_in_a_noisy_fleet_are_not_a_fault(tmp_path):
    # 18% heavy-tailed noise, 1% dips: a path 25% low in both rounds is what chance does among 2,000 paths
    spec, frame, truth = sim(tmp_path, "d", nodes=48, leaves=3, repeats=2, noise=0.18, heavy=True, dips=0.01, seed=8)
    frame = frame.copy()
    sel = (frame["node_a"] == "node0003") & (frame["node_b"] == "node0030") & (frame["direction"].astype(str) == "a->b")
    frame.loc[sel, "algbw_gbps"] *= 0.75
    res = analyze_frame(tmp_path, "d", frame, spec.hosts(), fabric_from_leaves(truth["leaves"], spines=1))
    assert res.exit_code == 0, faults(res)


def test_uniform_congestion_is_not_a_fault(tmp_path):
    spec, frame, truth = sim(tmp_path, "c", seed=4)
    frame = frame.copy()
    la = frame["node_a"].astype(str).map(truth["leaves"])
    lb = frame["node_b"].astype(str).map(truth["leaves"])
    frame.loc[la != lb, "algbw_gbps"] *= 0.6  # every cross-leaf path 40% lower: congestion, not a component
    res = analyze_frame(tmp_path, "c", frame, spec.hosts())  # no topology
    assert res.exit_code == 0 and faults(res) == []


@pytest.mark.parametrize("noise", [0.03, 0.18])
def test_healthy_noisy_oversubscribed_static_fabric_exits_0(tmp_path, noise):
    spec = SimSpec(nodes=32, leaves=4, spines=2, noise=noise, heavy=True, dips=0.01, failures=0.003, repeats=2,
                   oversubscription=2.0, routing="static", seed=21)
    out, truth = write(spec, tmp_path / "o")
    res = analyze(load(out), fabric_from_leaves(truth["leaves"], spines=2, oversubscription=2.0))
    assert res.exit_code == 0, faults(res)


def test_latency_judged_per_size_from_that_size_only(tmp_path):
    hosts = [f"n{i}" for i in range(6)]
    rows = []
    for a in hosts:
        for b in hosts:
            if a == b:
                continue
            for size, lat in ((8, 2.0), (16 << 20, 900.0)):
                if size == 8 and a == "n0":
                    continue  # n0's small-size rows are missing: its 16 MiB ping-pong must not stand in
                rows.append({"row_kind": "pair", "node_a": a, "node_b": b, "direction": "pingpong", "size_bytes": size,
                             "latency_us": lat * (1 + 0.01 * ((hash((a, b, size)) % 7) - 3)), "status": "ok",
                             "round": 0, "algbw_gbps": None})
    res = analyze_frame(tmp_path, "l", rows, hosts)
    assert [v for v in res.verdicts if v.kind == "nic"] == []
    assert {c["what"] for c in res.compared} >= {"latency 8 B", f"latency {16 << 20} B"}


# ---------------------------------------------------------------- 2. patterns, not only magnitudes

@pytest.mark.parametrize("kind,direction", [("nic-rx", "rx"), ("nic-tx", "tx"), ("nic", "both")])
def test_host_side_direction_is_one_nic_verdict(tmp_path, kind, direction):
    spec = SimSpec(nodes=6, leaves=3, repeats=3, noise=0.18, heavy=True, seed=5, faults=[parse_fault(f"{kind}:node0003:0.5")])
    out, truth = write(spec, tmp_path / kind)
    res = analyze(load(out), fabric_from_leaves(truth["leaves"]))
    assert faults(res) == [("nic", "node0003")]
    v = res.faults()[0]
    assert v.direction == direction and v.confidence >= 0.8 and v.drainable_host == "node0003"


def test_flapping_nic_is_one_intermittent_verdict(tmp_path):
    spec = SimSpec(nodes=32, leaves=4, repeats=3, noise=0.03, seed=12, faults=[parse_fault("flap:node0010:0.4")])
    out, truth = write(spec, tmp_path / "f")
    res = analyze(load(out), fabric_from_leaves(truth["leaves"]))
    got = res.faults()
    assert [(v.kind, v.component) for v in got] == [("nic", "node0010")]
    assert got[0].pattern in ("intermittent", "steady")
    assert not any(v.kind == "link" for v in got)


def test_repeated_static_collisions_are_not_confident_links(tmp_path):
    spec = SimSpec(nodes=32, leaves=4, spines=4, noise=0.03, repeats=3, oversubscription=1.0, routing="static", seed=2)
    out, truth = write(spec, tmp_path / "s")
    res = analyze(load(out), fabric_from_leaves(truth["leaves"], spines=4, oversubscription=1.0))
    assert [v for v in res.faults() if v.kind == "link"] == []


# ---------------------------------------------------------------- 3. contention is not a fault

def test_oversubscribed_rounds_judged_against_their_share(tmp_path):
    spec = SimSpec(nodes=32, leaves=4, spines=1, noise=0.03, oversubscription=4.0, seed=6,
                   faults=[parse_fault("nic:node0007:0.5")])
    out, truth = write(spec, tmp_path / "c")
    res = analyze(load(out), fabric_from_leaves(truth["leaves"], spines=1, oversubscription=4.0))
    assert faults(res) == [("nic", "node0007")]
    assert any("fair share" in n for n in res.notes)


# ---------------------------------------------------------------- 4. nothing judged, never PASS

def test_nothing_judged_is_inconclusive_and_criteria_cannot_pass(tmp_path):
    spec, frame, truth = sim(tmp_path, "two", nodes=2, leaves=1, seed=1)
    res = analyze_frame(tmp_path, "two", frame, spec.hosts())
    assert res.exit_code == 3 and not res.judged or res.exit_code == 3
    ev = criteria.evaluate(criteria.default(), res)
    assert not ev["cluster"]["pass"]
    text = report_text.render(res, ev)
    assert "INCONCLUSIVE (exit 3)" in text and "cluster PASS" not in text and "cluster INCONCLUSIVE" in text
    assert 'name="evidence"' in report_junit.render(res, ev) and "<failure" in report_junit.render(res, ev)
    assert any(c["basis"] == "nothing" for c in res.compared)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), float("nan")])
def test_every_reading_broken_is_never_healthy(tmp_path, value):
    spec, frame, truth = sim(tmp_path, "z", nodes=8, leaves=2, seed=1)
    frame = frame.copy()
    frame["algbw_gbps"] = value
    frame["busbw_gbps"] = value
    frame["latency_us"] = np.nan
    res = analyze_frame(tmp_path, "z", frame, spec.hosts())
    assert res.exit_code != 0
    assert not criteria.evaluate(criteria.default(), res)["cluster"]["pass"]


def test_every_pair_failed_is_never_healthy(tmp_path):
    spec, frame, truth = sim(tmp_path, "f", nodes=8, leaves=2, seed=1)
    frame = frame.copy()
    frame["status"] = "failed"
    frame["algbw_gbps"] = np.nan
    res = analyze_frame(tmp_path, "f", frame, spec.hosts())
    assert res.exit_code == 1 and res.cluster and res.cluster[0]["failed"]


def test_one_node_sending_at_zero_is_a_dead_direction(tmp_path):
    spec, frame, truth = sim(tmp_path, "s0", nodes=8, leaves=2, seed=1)
    frame = frame.copy()
    sender = np.where(frame["direction"].astype(str) == "a->b", frame["node_a"].astype(str), frame["node_b"].astype(str))
    frame.loc[sender == "node0005", "algbw_gbps"] = 0.0
    res = analyze_frame(tmp_path, "s0", frame, spec.hosts())
    got = {(v.kind, v.component): v for v in res.faults()}
    assert ("nic", "node0005") in got and got[("nic", "node0005")].direction == "tx"
    assert "0 GB/s" in got[("nic", "node0005")].summary
    assert res.exit_code == 1


# ---------------------------------------------------------------- 9. uplink shortfall, retest pairs

def test_fleet_shortfall_excludes_paths_an_uplink_explains(tmp_path):
    spec = SimSpec(nodes=24, leaves=4, seed=7, faults=[parse_fault("uplink:leaf2:0.5")])
    out, truth = write(spec, tmp_path / "u")
    fab = fabric_from_leaves(truth["leaves"])
    fab.expected = {"intra-leaf": 48 * 0.97, "inter-leaf": 46 * 0.97}
    res = analyze(load(out), fab)
    assert [v.kind for v in res.faults()] == ["uplink"]
    assert not any(c.get("failed") for c in res.cluster), res.cluster  # the uplink explains its paths


def test_retest_never_pairs_a_host_with_itself(tmp_path):
    for seed in range(3):
        spec = SimSpec(nodes=6, leaves=3, repeats=2, seed=seed, faults=[parse_fault("pair:node0001->node0004:0.4"),
                                                                       parse_fault("nic:node0002:0.5")])
        out, truth = write(spec, tmp_path / f"r{seed}")
        res = analyze(load(out), fabric_from_leaves(truth["leaves"]))
        for v in res.verdicts:
            for r in v.retest:
                ends = [x.split(" ")[0] for x in r.replace("<->", "->").split("->")]
                assert len(ends) < 2 or ends[0] != ends[1], r


# ---------------------------------------------------------------- 10. drain only what evidence names

def test_uplink_verdict_drains_and_fails_no_host(tmp_path):
    spec = SimSpec(nodes=16, leaves=4, seed=3, faults=[parse_fault("uplink:leaf3:0.5")])
    out, truth = write(spec, tmp_path / "u")
    for fab in (None, fabric_from_leaves(truth["leaves"])):
        res = analyze(load(out), fab)
        assert [v.kind for v in res.faults()] == ["uplink"]
        assert res.drain_candidates(0.0) == []
        ev = criteria.evaluate(criteria.default(), res)
        assert not ev["cluster"]["pass"] and all(n["pass"] for n in ev["nodes"].values())
        assert 'classname="node"' in report_junit.render(res, ev)
        assert report_junit.render(res, ev).count("<failure") == 1  # the cluster test only


def test_local_sweep_launcher_is_not_a_node(tmp_path):
    spec, frame, truth = sim(tmp_path, "loc", nodes=4, leaves=1, seed=1)
    frame = frame.copy()
    nodes = spec.hosts()
    res = analyze_frame(tmp_path, "loc", frame, ["launcher-box"], info={"kind": "pairwise-sweep", "nodes": nodes})
    assert "launcher-box" not in res.hosts
    assert not any("launcher-box" in v.component for v in res.verdicts)


# ---------------------------------------------------------------- the pipeline

def test_sources_are_registered_and_weighed_in_one_place():
    names = [s.name for s in sources()]
    assert names[:2] == ["pair-matrix", "latency"] and "baseline" in names and "run-hosts" in names
    ev = [Evidence(source="a", component="h1", kind="nic", deficit=0.3, support=20, noise=0.03, threshold=0.07,
                   own_host="h1"),
          Evidence(source="b", component="h1->h2", kind="link", deficit=0.4, support=2, noise=0.03, chance=3.0),
          Evidence(source="c", component="h3->h4", kind="link", deficit=0.9, support=1, noise=0.0, pattern="retest",
                   summary="failed once")]
    verdicts, retests = weigh(ev)
    got = {v.component: v for v in verdicts}
    assert got["h1"].confidence > 0.9 and got["h1"].drainable_host == "h1"
    assert got["h1->h2"].confidence < 0.01 and got["h1->h2"].drainable_host is None
    assert retests == ["h3->h4: failed once"]


def test_leaf_map_recorded_by_a_sweep_is_used_without_topology(tmp_path):
    """Sweeps record each node's leaf (run.json fabric.leaves, in node order): an uplink fault is named as the
    uplink, never as its leaf's hosts."""
    spec, frame, truth = sim(tmp_path, "lf", nodes=6, leaves=3, repeats=3, seed=2, faults=["uplink:leaf2:0.3"])
    hosts = spec.hosts()
    res = analyze_frame(tmp_path, "lf", frame, hosts,
                        info={"fabric": {"leaves": [truth["leaves"][h] for h in hosts]}})
    assert [v.kind for v in res.faults()] == ["uplink"] and res.drain_candidates(0.0) == []


@pytest.mark.parametrize("faults, spine_level", [
    ([], False),
    (["spine:spine1:0.5", "spine:spine2:0.5"], True),  # half the spines at half rate
    (["uplink:leaf2:0.5"], False),  # one leaf's uplinks: an uplink verdict, not the spine level
])
def test_half_the_spines_slow_is_the_spine_level_not_hosts(tmp_path, faults, spine_level):
    """Issue 9, 'patterns': with a topology that expects 48 GB/s on every path (the simulator's healthy rate),
    every leaf's cross-leaf paths low while paths inside leaves are not is the spine level; no host, NIC or
    uplink is blamed for it. A degraded uplink's paths are not counted as a fleet-wide shortfall."""
    spec = SimSpec(nodes=64, leaves=4, spines=4, noise=0.03, heavy=True, dips=0.01, failures=0.002, repeats=2,
                   seed=4, faults=[parse_fault(f) for f in faults])
    out, truth = write(spec, tmp_path / "s")
    fab = fabric_from_leaves(truth["leaves"], spines=4, oversubscription=1.0)
    fab.expected = {"intra-leaf": 48.0, "inter-leaf": 48.0}
    res = analyze(load(out), fab)
    said = [c["summary"] for c in res.cluster if c.get("failed")]
    assert any("the spine level" in s for s in said) == spine_level, said
    kinds = {v.kind for v in res.faults()}
    if spine_level:
        assert res.exit_code == 1 and not kinds & {"node", "nic", "link", "uplink"}, kinds
    elif faults:
        assert res.exit_code == 1 and kinds == {"uplink"}, kinds
    else:
        assert res.exit_code == 0 and not said
