"""The single-path test (pathtest.py), the uplink-load calibration (contention.calibrate_loads) and the
simulator's retest rounds, fitted rounds and fault effect (issue 9)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fabricbench.analyze import pathtest
from fabricbench.analyze.analysis import analyze
from fabricbench.analyze.contention import calibrate_loads
from fabricbench.analyze.importers import load
from fabricbench.analyze.simulate import SimSpec, parse_fault, simulate, write
from fabricbench.analyze.topo_adapter import fabric_from_leaves


def test_binomial_tail_is_exact():
    assert math.isclose(pathtest.binom_sf(2, 2, 0.1), 0.01)
    assert math.isclose(pathtest.binom_sf(1, 3, 0.5), 1 - 0.125)
    assert pathtest.binom_sf(0, 4, 0.3) == 1.0 and pathtest.binom_sf(3, 3, 0.0) == 0.0


def test_more_rounds_of_a_modest_deficit_become_significant_and_noise_does_not():
    rng = np.random.default_rng(0)
    null = pathtest.Null(rng.standard_normal(20000) * 0.18)
    slow = -0.36 + rng.standard_normal(12) * 0.18  # a path 30% slow under 18% noise
    p2, _ = pathtest.scan_p(slow[:2], null)
    p12, j = pathtest.scan_p(slow, null)
    assert p12 < p2 / 100 and p12 * 1000 < 0.01  # 12 rounds: beyond chance among 1,000 paths, 2 rounds are not
    assert p2 * 1000 > 1
    assert j >= 6  # a majority of its rounds agree
    healthy = [pathtest.scan_p(rng.standard_normal(12) * 0.18, null)[0] for _ in range(200)]
    assert min(healthy) > 1e-4  # 200 healthy paths of 12 rounds: none near that bar


def test_one_dip_among_many_rounds_is_not_a_path_fault():
    rng = np.random.default_rng(1)
    null = pathtest.Null(rng.standard_normal(5000) * 0.03)
    units = np.r_[rng.standard_normal(5) * 0.03, -0.8]  # five normal rounds and one deep dip
    assert pathtest.scan_p(units, null)[0] > 0.1


def test_both_directions_of_one_round_count_once():
    ab, ab_t = np.array([-0.5, -0.5]), np.array([3, 7])
    ba, ba_t = np.array([-0.4, 0.0]), np.array([3, 7])
    got = sorted(pathtest.both_ways(ab, ab_t, ba, ba_t))
    assert got == [-0.4, 0.0]  # per round the better direction; round 7 is normal one way, so not low


def test_repeat_correlation_tells_recurring_collisions_from_fresh_draws():
    rng = np.random.default_rng(2)
    paths = np.repeat(np.arange(300), 2)
    tags = np.tile([0, 1], 300)  # rounds 0 and 1 ran with the same co-runners
    sig = {0: 5, 1: 5}
    among = np.ones(300, dtype=bool)
    fresh = rng.standard_normal(600)
    rho, n = pathtest.repeat_correlation(paths, tags, fresh, sig, among)
    assert n == 300 and abs(rho) < 0.2
    collision = np.repeat(rng.standard_normal(300), 2) + rng.standard_normal(600) * 0.1
    rho, _ = pathtest.repeat_correlation(paths, tags, collision, sig, among)
    assert rho > 0.8
    # rounds fitted to the uplinks: most flows ran alone, a few collided, and those recur in every repeat
    few = np.zeros(300)
    few[:6] = -0.5
    few = np.repeat(few, 2) + rng.standard_normal(600) * 0.1
    ranks = np.argsort(np.argsort(few))
    assert abs(float(np.corrcoef(ranks[::2], ranks[1::2])[0, 1])) < 0.2  # a rank correlation misses them
    rho, _ = pathtest.repeat_correlation(paths, tags, few, sig, among)
    assert rho >= 0.2


def test_calibration_brings_each_uplink_load_to_what_it_really_yields():
    rng = np.random.default_rng(3)
    n = 4000
    ls, ld = rng.integers(0, 8, n), rng.integers(0, 8, n)
    ld = np.where(ld == ls, (ld + 1) % 8, ld)
    lu = rng.integers(6, 10, n).astype(np.int32)  # flows out of the source leaf in the round
    lo = rng.integers(6, 10, n).astype(np.int32)  # ... into the destination leaf
    yields = -0.05 * np.maximum(lu, lo)  # static hashing: heavier loads yield less than the even split says
    y = (yields + rng.standard_normal(n) * 0.01).astype(np.float32)
    slow = ls == 2  # leaf 2's uplink 15% short: its flows read low at every load
    y[slow] += np.log(0.85)
    size = np.zeros(n, dtype=np.int16)
    out, groups = calibrate_loads(y, size, lu, lo, ls, ld)
    assert groups == 16
    healthy = out[~slow & (ls != 2) & (ld != 2)]
    assert float(np.std(y[~slow & (ld != 2)])) > 0.04  # before: the load trend spreads healthy flows
    assert float(np.std(healthy)) < 0.015  # after: every load judged against what it yields
    level = float(np.median(healthy))
    assert float(np.median(out[slow])) - level < np.log(0.88)  # the short uplink is not calibrated away


def test_simulated_retest_keeps_the_sweep_and_adds_rounds_with_other_co_runners(tmp_path):
    spec = SimSpec(nodes=16, leaves=4, repeats=2, seed=3)
    sweep, _ = simulate(spec)
    spec.retest, spec.retest_rounds = [("node0001", "node0005"), ("node0002", "node0009")], 3
    both, truth = simulate(spec)
    assert both.iloc[:len(sweep)]["algbw_gbps"].equals(sweep["algbw_gbps"])  # the sweep's readings unchanged
    extra = both.iloc[len(sweep):]
    assert truth["retest"]["rounds"] == 3 and len(extra) == 2 * 3 * 2 * 2  # pairs x rounds x directions x sizes
    assert extra["round"].min() > sweep["round"].max()


def test_fault_effect_says_when_contention_masks_a_fault():
    kw = dict(nodes=32, leaves=4, spines=4, oversubscription=2.0, routing="static", seed=4)
    _, t = simulate(SimSpec(faults=[parse_fault("nic:node0005:0.7")], **kw))
    assert t["fault_effect"]["max"] > 0.25 and t["fault_effect"]["measurements_5pct"] > 20
    _, t = simulate(SimSpec(**kw))
    assert t["fault_effect"] == {"max": 0.0, "measurements_5pct": 0}


def test_retest_confirms_a_path_one_noisy_sweep_cannot(tmp_path):
    kw = dict(nodes=48, leaves=6, noise=0.18, heavy=True, repeats=2, seed=11,
              faults=[parse_fault("pair:node0007->node0031:0.7")])
    out, truth = write(SimSpec(**kw), tmp_path / "one")
    res = analyze(load(out), fabric_from_leaves(truth["leaves"]))
    assert not [v for v in res.faults() if v.kind == "link"]
    sus = [(s["src"], s["dst"]) for s in res.suspect_paths[:20]]
    assert ("node0007", "node0031") in sus
    out, truth = write(SimSpec(retest=sus, retest_rounds=4, **kw), tmp_path / "two")
    ds = load(out)
    assert set(ds.pairs["stage"].unique()) == {0, 1}  # the simulator records each row's stage, as sweeps do
    res = analyze(ds, fabric_from_leaves(truth["leaves"]))
    assert [v.component for v in res.faults()] == ["node0007->node0031"]
    # confirmed on its retest rounds alone, among the paths retested (not the thousands swept)
    said = " ".join(res.faults()[0].evidence)
    assert "retest units" in said and f"{2 * len({frozenset(p) for p in sus})} paths retested" in said
    assert any("ran again in its retest" in n and ": 1 verdict(s)" in n for n in res.notes)


def test_retest_units_are_the_retest_rounds_of_paths_the_sweep_also_measured():
    path = np.array([7, 7, 7, 7, 9, 9, 4])
    value = np.array([-0.5, -0.4, 0.0, 0.1, 0.0, -0.2, -0.9])
    tag = np.array([1, 2, 10, 11, 3, 10, 11])  # rounds 10 and 11 are the retest's
    got = pathtest.retest_units(path, value, tag, np.array([10, 11]))
    assert sorted(got) == [7, 9]  # path 4 ran in the retest only: a new partner, judged as any path
    assert got[7][0].tolist() == [0.0, 0.1] and got[7][1].tolist() == [10, 11]
    assert got[9][0].tolist() == [-0.2]
    assert pathtest.retest_units(path, value, tag, np.array([], dtype=np.int64)) == {}


def test_a_retest_that_reads_normal_clears_what_the_sweep_read_low(tmp_path):
    """The sweep's rounds of a retested path are why it was chosen: a path low in the sweep and normal in all
    its retest rounds is not blamed, however low the sweep read it (a path with no retest would be)."""
    from fabricbench.results import write_results
    from fabricbench.results.schema import to_frame

    kw = dict(nodes=48, leaves=6, noise=0.03, heavy=True, repeats=2, seed=12)
    a, b = "node0004", "node0029"

    def with_sweep_dip(spec, name):
        frame, truth = simulate(spec)
        hit = (frame["node_a"] == a) & (frame["node_b"] == b) & (frame["direction"] == "a->b") \
            & (frame["phase"] == "sweep")
        frame.loc[hit, "algbw_gbps"] *= 0.5  # both sweep rounds (and sizes) of a->b at half rate
        write_results(tmp_path / name, to_frame(frame), {"run_id": "sim", "status": "ok", "hosts": spec.hosts()})
        return analyze(load(tmp_path / name), fabric_from_leaves(truth["leaves"]))

    res = with_sweep_dip(SimSpec(**kw), "sweep")
    assert [v.component for v in res.faults() if v.kind == "link"] == [f"{a}->{b}"]
    res = with_sweep_dip(SimSpec(retest=[(a, b)], retest_rounds=4, **kw), "retested")
    assert not res.faults()
    assert not [x for x in res.suspect_paths if (x["src"], x["dst"]) == (a, b) and not x["retested"]]
    assert not [r for r in res.retests if f"{a}->{b}" in r]  # not listed for a retest again
    assert any("ran again in its retest" in n and ": 0 verdict(s)" in n for n in res.notes)


def test_a_retest_reruns_blamed_paths_first_then_uncleared_suspects(tmp_path):
    """What `sweep pairwise --retest-rounds` reruns: a path already blamed is confirmed on its own rounds (a
    verdict from one sweep must survive the retest's stricter count of tests), then the unexplained dips."""
    kw = dict(nodes=48, leaves=6, noise=0.03, heavy=True, repeats=2, seed=12,
              faults=[parse_fault("pair:node0004->node0029:0.5")])
    out, truth = write(SimSpec(**kw), tmp_path / "sweep")
    res = analyze(load(out), fabric_from_leaves(truth["leaves"]))
    again = res.retest_paths()
    assert again[0] == ("node0004", "node0029") and len(again) == len(set(again))
    assert again[1:] == [(x["src"], x["dst"]) for x in res.suspect_paths if not x["retested"]
                         and (x["src"], x["dst"]) != ("node0004", "node0029")]
    out, truth = write(SimSpec(retest=again[:20], retest_rounds=4, **kw), tmp_path / "retest")
    res = analyze(load(out), fabric_from_leaves(truth["leaves"]))
    assert [v.component for v in res.faults()] == ["node0004->node0029"]
    assert ("node0004", "node0029") in res.retest_paths()  # still blamed: a later retest would run it again


def test_fitted_pattern_keeps_every_round_within_the_uplinks():
    spec = SimSpec(nodes=32, leaves=4, spines=4, oversubscription=2.0, routing="static", pattern="fitted", seed=5)
    frame, _ = simulate(spec)
    leaf = spec.leaves_map()
    one = frame[(frame["direction"] == "a->b") & (frame["size_bytes"] == frame["size_bytes"].max())]
    pairs = {tuple(sorted((a, b))) for a, b in zip(one["node_a"].astype(str), one["node_b"].astype(str))}
    assert len(pairs) == 32 * 31 // 2  # still every pair
    for _, rnd in one.groupby("round"):
        load: dict[str, int] = {}
        for a, b in zip(rnd["node_a"].astype(str), rnd["node_b"].astype(str)):
            if leaf[a] != leaf[b]:
                for x in (leaf[a], leaf[b]):
                    load[x] = load.get(x, 0) + 1
        assert max(load.values(), default=0) <= 4  # 8 hosts per leaf at 2:1: 4 pairs at full rate


def test_a_sweeps_recorded_uplink_limits_stand_in_for_a_topology(tmp_path):
    """`sweep pairwise --fabric` records each leaf's uplink capacity (pairs at full host rate): without
    --topology, the analyzer models contention from it (hosts swept on a leaf / its capacity)."""
    from fabricbench.results import write_results
    from fabricbench.results.schema import to_frame

    spec = SimSpec(nodes=48, leaves=6, spines=2, oversubscription=2.0, seed=1)
    frame, _ = simulate(spec)
    hosts, leaf_of = spec.hosts(), spec.leaves_map()
    fabric = {"leaves": [leaf_of[h] for h in hosts], "uplink_pairs": {lf: 4 for lf in set(leaf_of.values())}}
    info = {"run_id": "s", "status": "ok", "kind": "pairwise-sweep", "nodes": hosts, "hosts": hosts}
    write_results(tmp_path / "mapped", to_frame(frame), dict(info, fabric=fabric))
    ds = load(tmp_path / "mapped")
    assert ds.extra["uplink_oversubscription"] == [2.0]  # 8 hosts on each leaf, 4 pairs of uplink
    res = analyze(ds)
    assert any("2:1 oversubscribed, as the sweep's fabric map recorded" in n for n in res.notes)
    assert res.exit_code == 0
    # a leaf without a recorded limit: no single figure to model with
    fabric["uplink_pairs"].pop(leaf_of[hosts[0]])
    write_results(tmp_path / "partial", to_frame(frame), dict(info, fabric=fabric))
    assert "uplink_oversubscription" not in load(tmp_path / "partial").extra


def test_hosts_keep_every_partner_unless_collisions_show_in_the_data(tmp_path):
    """Several spines make collisions possible, not certain: with adaptive routing on a non-blocking fabric the
    cross-leaf paths scatter no wider than intra-leaf ones and a host is judged on all 63 partners; under
    static ECMP (collisions scatter them) or on oversubscribed leaves, on its 15 intra-leaf partners."""
    seen = {}
    for over, routing in ((1.0, "adaptive"), (1.0, "static"), (2.0, "static")):
        spec = SimSpec(nodes=64, leaves=4, spines=4, noise=0.03, heavy=True, seed=3, oversubscription=over,
                       routing=routing, faults=[parse_fault("nic-rx:node0005:0.8")])
        out, truth = write(spec, tmp_path / f"{routing}{over}")
        res = analyze(load(out), fabric_from_leaves(truth["leaves"], spines=4, oversubscription=over))
        verdicts = res.faults()
        assert [(v.kind, v.component) for v in verdicts] == [("nic", "node0005")]
        seen[(over, routing)] = verdicts[0].summary
    assert "across 63 partners" in seen[(1.0, "adaptive")]
    assert "across 15 partners" in seen[(1.0, "static")] and "across 15 partners" in seen[(2.0, "static")]


def test_stage_is_read_from_the_phase_column_and_unknown_otherwise(tmp_path):
    from fabricbench.results import write_results
    from fabricbench.results.schema import to_frame

    spec = SimSpec(nodes=8, leaves=2, seed=1, retest=[("node0001", "node0002")], retest_rounds=2)
    frame, _ = simulate(spec)
    info = {"run_id": "s", "status": "ok", "hosts": spec.hosts()}
    write_results(tmp_path / "named", to_frame(frame), info)
    stage = load(tmp_path / "named").pairs["stage"]
    assert sorted(stage.unique()) == [0, 1] and (stage == 1).sum() == 2 * 2 * 2  # 1 pair: rounds x directions x sizes
    numeric = to_frame(frame)
    numeric["phase"] = 7  # not a sweep's stage names (a broken or foreign file): unknown, never a traceback
    write_results(tmp_path / "numeric", numeric, info)
    assert (load(tmp_path / "numeric").pairs["stage"] == -1).all()


def test_resolvable_depth_is_where_the_scan_starts_to_blame():
    rng = np.random.default_rng(3)
    null = pathtest.Null(rng.normal(0.0, 0.15, 20000))
    d2 = pathtest.resolvable_depth(null, 2, 16000, 0.01, 3.0)
    assert 0.3 < d2 < 1.0  # two rounds at 15% among 16,000 paths: only a deep fault stands out
    for k, tests in ((2, 16000), (6, 16000), (4, 128)):
        d = pathtest.resolvable_depth(null, k, tests, 0.01, 3.0)
        p_in, _ = pathtest.scan_p(np.full(k, -d * 1.01), null)
        p_out, _ = pathtest.scan_p(np.full(k, -d * 0.97), null)
        assert p_in * tests <= 0.01 and (p_out * tests > 0.01 or d * 0.97 < 3.0 * null.spread / math.sqrt(k))
    # more rounds, or fewer paths tested (a retest), resolve shallower faults
    assert pathtest.resolvable_depth(null, 10, 16000, 0.01, 3.0) < 0.5 * d2
    assert pathtest.resolvable_depth(null, 2, 64, 0.01, 3.0) < d2
    assert pathtest.resolvable_depth(null, 1, 16000, 0.01, 3.0) == math.inf  # one round: never a path verdict


def test_the_analysis_says_how_deep_a_single_path_fault_must_be(tmp_path):
    """A pass on noisy data is not a clearance of shallow single-path faults: the analysis says which depth the
    sweep could resolve, per class of path, and what more rounds would buy."""
    got = {}
    for noise in (0.03, 0.18):
        out, truth = write(SimSpec(nodes=48, leaves=6, noise=noise, heavy=True, repeats=2, seed=21), tmp_path / str(noise))
        res = analyze(load(out), fabric_from_leaves(truth["leaves"]))
        rows = {x["class"]: x for x in res.counts["single_path_resolution"]}
        assert set(rows) == {"intra-leaf", "inter-leaf"} and all(x["rounds"] == 2 for x in rows.values())
        assert all(x["with_8_more_rounds_pct"] < x["resolvable_pct"] for x in rows.values())
        got[noise] = rows["inter-leaf"]["resolvable_pct"]
        assert any(n.startswith("single-path resolution:") and "beyond this data, not cleared" in n for n in res.notes)
    assert got[0.03] < 15 < 25 < got[0.18]  # 48 hosts: 2,256 paths


def test_median_p_is_the_chance_of_a_median_this_low():
    rng = np.random.default_rng(5)
    pool = rng.standard_t(3, 50000) * 0.1
    null = pathtest.Null(pool)
    draws = np.median(rng.choice(pool, size=(200000, 15)), axis=1)
    for x in (-0.05, -0.1):
        assert pathtest.median_p(x, 15, null) == pytest.approx(float(np.mean(draws <= x)), rel=0.15)
    assert pathtest.median_p(-0.3, 15, null) < pathtest.median_p(-0.3, 5, null)  # more partners: rarer


def test_a_healthy_host_with_few_partners_is_judged_by_the_datas_own_tail(tmp_path):
    """256 hosts, 2:1 static leaves, one sweep at 20% heavy-tailed noise: hosts are judged on their ~15
    intra-leaf partners, and among 512 host sides one reads 16% low on 13 of them, 4 Gaussian standard errors
    of a median. How often a median of 13 draws of the pairs nothing explains is that low (times the sides
    tested) keeps it a suspect, not a fault; a NIC really 30% slow there stays a confident verdict."""
    kw = dict(nodes=256, leaves=16, spines=2, noise=0.2, heavy=True, dips=0.01, failures=0.005, repeats=1,
              oversubscription=2.0, routing="static", seed=7216)
    out, truth = write(SimSpec(**kw), tmp_path / "healthy")
    fab = fabric_from_leaves(truth["leaves"], spines=2, oversubscription=2.0)
    res = analyze(load(out), fab)
    assert res.exit_code == 0, [(v.component, v.confidence) for v in res.faults()]
    weak = [v for v in res.verdicts if v.component == "node0241"]
    assert weak and weak[0].confidence < 0.5 and "expected this low by chance among 512" in " ".join(weak[0].evidence)
    out, truth = write(SimSpec(faults=[parse_fault("nic:node0100:0.7")], **kw), tmp_path / "faulty")
    res = analyze(load(out), fab)
    assert [v.component for v in res.faults()] == ["node0100"] and res.faults()[0].confidence >= 0.9


def test_host_chance_is_calibrated_on_a_healthy_fleet():
    """Host terms of an iid fleet: p <= 1% about 1% of the time. Against the fit's residuals instead (each had
    its ends' small terms taken out) it was ~6x too often, and a median over 127 partners made that a false NIC."""
    from fabricbench.analyze import pairfit
    from fabricbench.analyze.sources.pair_matrix import HostNull

    rng = np.random.default_rng(1)
    n, runs, ps = 128, 10, []
    for _ in range(runs):
        Y = (rng.standard_normal((n, n)) * 0.1).astype(np.float32)
        np.fill_diagonal(Y, np.nan)
        f = pairfit.fit(Y, None, explain=0.04, floor=0.01)
        hn = HostNull([np.where(f.predicted > -0.04, Y, np.nan)], [np.isfinite(Y)], np.zeros((n, n), dtype=np.int8))
        ps += [hn.median_p(i, float(f.send[i]), int(f.send_n[i]), 0, "send") for i in range(n)]
        ps += [hn.median_p(i, float(f.recv[i]), int(f.recv_n[i]), 0, "recv") for i in range(n)]
    ps = np.array(ps)
    for t in (0.05, 0.01):
        assert 0.4 * t * len(ps) <= (ps <= t).sum() <= 2.0 * t * len(ps)
