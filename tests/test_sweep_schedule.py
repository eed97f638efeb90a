"""Schedules of the pairwise sweep: circle method (even and odd n), random partners, packing, retests."""

from __future__ import annotations

import itertools

import pytest

from fabricbench.errors import UsageError
from fabricbench.slurm import schedule
from fabricbench.slurm.planning import find_suspects, make_rounds, retest_plan
from fabricbench.slurm.sweep import Plan


def _disjoint(rnd):
    nodes = [x for p in rnd for x in p]
    return len(nodes) == len(set(nodes))


@pytest.mark.parametrize("n", range(2, 18))
def test_circle_covers_every_pair_once_in_the_fewest_rounds(n):
    rounds = schedule.circle(n)
    pairs = schedule.all_pairs(rounds)
    assert sorted(pairs) == sorted(itertools.combinations(range(n), 2))  # every pair exactly once
    assert all(a < b for a, b in pairs)
    assert all(_disjoint(r) for r in rounds)
    if n % 2 == 0:
        assert len(rounds) == n - 1 and all(len(r) == n // 2 for r in rounds)
    else:
        assert len(rounds) == n and all(len(r) == (n - 1) // 2 for r in rounds)
        idle = [set(range(n)) - {x for p in r for x in p} for r in rounds]
        assert all(len(i) == 1 for i in idle)
        assert sorted(next(iter(i)) for i in idle) == list(range(n))  # each node sits out exactly once


def test_circle_small_cases():
    assert schedule.circle(1) == [] and schedule.circle(0) == []
    assert schedule.circle(2) == [[(0, 1)]]
    assert schedule.circle(4) == [[(0, 3), (1, 2)], [(0, 2), (1, 3)], [(0, 1), (2, 3)]]


@pytest.mark.parametrize("n,k", [(8, 3), (16, 5), (7, 4), (2, 3)])
def test_random_partners_are_disjoint_rounds_and_fresh_when_possible(n, k):
    rounds = schedule.random_partners(n, k, seed=1)
    assert len(rounds) == k
    assert all(_disjoint(r) and len(r) == n // 2 for r in rounds)
    pairs = schedule.all_pairs(rounds)
    if n * (n - 1) // 2 >= len(pairs) and n >= 8:
        assert len(set(pairs)) == len(pairs)  # no pair repeated when enough fresh ones exist
    assert schedule.random_partners(n, k, seed=1) == rounds  # deterministic per seed
    assert schedule.random_partners(n, k, seed=2) != rounds or n == 2


@pytest.mark.parametrize("n, k", [(8, 3), (9, 2), (16, 4), (256, 8)])
def test_rotation_slices_meet_every_pair_in_the_fewest_nights(n, k):
    rounds = len(schedule.circle(n))
    nights = -(-rounds // k)
    for start in (0, 5):
        met = set()
        for night in range(start, start + nights):
            slice_ = schedule.rotation(n, k, night)
            assert len(slice_) == k
            for r in slice_:
                nodes = [x for p in r for x in p]
                assert len(nodes) == len(set(nodes))  # concurrent pairs are disjoint
            met |= {p for r in slice_ for p in r}
        assert met == set(itertools.combinations(range(n), 2)), (n, k, start)
    by_cli = make_rounds(n, "rotation", k, 1, 3)
    assert [[tuple(p) for p in r["pairs"]] for r in by_cli] == schedule.rotation(n, k, 3)


def test_pack_and_retest_pairs():
    pairs = [(0, 1), (0, 2), (1, 2), (3, 4), (2, 3)]
    rounds = schedule.pack(pairs)
    assert sorted(schedule.all_pairs(rounds)) == sorted(pairs)
    assert all(_disjoint(r) for r in rounds)
    tested = schedule.all_pairs(schedule.circle(6))[:5]
    new = schedule.retest_pairs(8, [(0, 1)], tested, healthy=[2, 3, 4, 5, 6, 7], seed=3)
    assert len(new) == 2
    assert {p for p in new} & set(tested) == set()
    assert any(0 in p for p in new) and any(1 in p for p in new)
    assert all((set(p) - {0, 1}) <= {2, 3, 4, 5, 6, 7} for p in new)
    # no healthy partner left that either has not met: nothing to retest with
    assert schedule.retest_pairs(2, [(0, 1)], [(0, 1)], healthy=[]) == []


def test_make_rounds_numbers_repeats_and_rejects_bad_input():
    rounds = make_rounds(4, "circle", 0, 2, 0)
    assert [r["round"] for r in rounds] == list(range(6))
    assert [r["repeat"] for r in rounds] == [0, 0, 0, 1, 1, 1]
    assert len(make_rounds(6, "random", 2, 1, 0)) == 2
    with pytest.raises(UsageError, match="--pattern"):
        make_rounds(4, "ring", 1, 1, 0)
    with pytest.raises(UsageError, match="--repeat"):
        make_rounds(4, "circle", 1, 0, 0)
    with pytest.raises(UsageError, match="--partners"):
        make_rounds(4, "random", 0, 1, 0)


def _row(rnd, a, b, direction, bw, size=1 << 20, lat=None):
    return {"kind": "row", "phase": "sweep", "round": rnd, "repeat": 0, "node_a": a, "node_b": b, "rail": 0,
            "direction": direction, "size_bytes": size, "algbw_gbps": bw, "latency_us": lat}


def _circle_sweep(n: int, bw_of):
    """An n-node circle plan and its sweep records (both directions), each pair's bandwidth from bw_of((a, b))."""
    nodes = [f"n{i}" for i in range(n)]
    plan = Plan(run_id="x", out_dir="/nonexistent", nodes=nodes,
                rounds=make_rounds(n, "circle", 0, 1, 0), sizes=[1 << 20])
    records = [{"kind": "done", "phase": "sweep", "node": x} for x in nodes]
    for rnd in plan.rounds:
        for a, b in rnd["pairs"]:
            records += [_row(rnd["round"], nodes[a], nodes[b], d, bw_of((a, b))) for d in ("a->b", "b->a")]
    return nodes, plan, records


def test_suspects_and_retest_plan_pick_new_healthy_partners():
    nodes = [f"n{i}" for i in range(6)]
    plan = Plan(run_id="x", out_dir="/nonexistent", nodes=nodes,
                rounds=make_rounds(6, "circle", 0, 1, 0), sizes=[1 << 20])
    records = [{"kind": "done", "phase": "sweep", "node": n} for n in nodes]
    for rnd in plan.rounds:
        for a, b in rnd["pairs"]:
            bw = 0.3 if 4 in (a, b) else 1.0  # n4 is slow with everybody
            records += [_row(rnd["round"], nodes[a], nodes[b], d, bw) for d in ("a->b", "b->a")]
            records.append(_row(rnd["round"], nodes[a], nodes[b], "pingpong", None, lat=50.0))
    suspects = find_suspects(records, below=0.8)
    assert suspects and all("n4" in (a, b) for a, b, _ in suspects)
    assert len(suspects) == 5
    re = retest_plan(plan, records, below=0.8)
    # every pair was already met in a full circle sweep: no new partner exists, so nothing to retest
    assert re is None
    # a random sweep leaves unmet partners: the retest pairs each suspect node with a healthy one it has not met
    plan.rounds = make_rounds(6, "random", 2, 1, 5)
    records = [{"kind": "done", "phase": "sweep", "node": n} for n in nodes]
    for rnd in plan.rounds:
        for a, b in rnd["pairs"]:
            bw = 0.3 if (a, b) == tuple(plan.rounds[0]["pairs"][0]) else 1.0  # one bad pair (a path)
            records += [_row(rnd["round"], nodes[a], nodes[b], d, bw) for d in ("a->b", "b->a")]
    re = retest_plan(plan, records, below=0.8)
    assert re is not None and re.phase == "retest"
    bad = set(plan.rounds[0]["pairs"][0])
    met = {tuple(p) for r in plan.rounds for p in r["pairs"]}
    new = [tuple(p) for r in re.rounds for p in r["pairs"]]
    assert new and all(tuple(sorted(p)) not in met for p in new)
    assert all(len(set(p) & bad) == 1 for p in new)  # each with one node of the suspect pair, one healthy
    assert min(r["round"] for r in re.rounds) == len(plan.rounds)


def test_fabric_map_from_the_lab_topology_and_rounds_fitted_to_uplinks(tmp_path):
    from fabricbench.lab.plan import make_plan
    from fabricbench.lab.topology import render_yaml
    from fabricbench.slurm.fabric_map import fabric_map, fit_rounds, leaves_for, round_sharing

    path = tmp_path / "topology.yaml"
    path.write_text(render_yaml(make_plan(0, 6, 3, 400_000_000)))
    fmap = fabric_map(str(path))
    assert fmap["leaf_of"] == {"lab1": "leaf1", "lab2": "leaf1", "lab3": "leaf2", "lab4": "leaf2",
                               "lab5": "leaf3", "lab6": "leaf3"}
    assert fmap["uplink_pairs"] == {}  # non-blocking: no limit
    path.write_text(render_yaml(make_plan(0, 6, 3, 400_000_000, oversubscription=2.0)))
    fmap = fabric_map(str(path))
    assert fmap["uplink_pairs"] == {"leaf1": 1, "leaf2": 1, "leaf3": 1}  # 400 Mbit/s up: one host's link
    leaves = leaves_for(["lab1.cluster", "lab2", "lab3", "lab4", "lab5", "lab6"], fmap)  # short names match
    assert leaves == ["leaf1", "leaf1", "leaf2", "leaf2", "leaf3", "leaf3"]
    base = schedule.circle(6)
    fitted = fit_rounds(base, leaves, fmap["uplink_pairs"])
    assert sorted(schedule.all_pairs(fitted)) == sorted(schedule.all_pairs(base))  # every pair, once
    for rnd in fitted:
        nodes = [x for p in rnd for x in p]
        assert len(nodes) == len(set(nodes))  # still disjoint
        for pair, share in round_sharing(rnd, leaves).items():
            assert share["uplink_pairs"] <= 1 and share["shared_with"] == [], (rnd, share)
    assert len(fitted) > len(base)
    # unfitted circle rounds: some pairs share an uplink, and the record says with whom
    shared = [round_sharing(r, leaves) for r in base]
    assert any(s["uplink_pairs"] == 2 for r in shared for s in r.values())
    one = round_sharing([(0, 2), (1, 4), (3, 5)], leaves)  # lab1-lab3, lab2-lab5, lab4-lab6
    assert one[(0, 2)] == {"uplinks": ["leaf1", "leaf2"], "uplink_pairs": 2, "shared_with": [(1, 4), (3, 5)]}


def test_sweep_plan_is_fitted_to_the_topology_and_records_it(tmp_path):
    from fabricbench.lab.plan import make_plan
    from fabricbench.lab.topology import render_yaml
    from fabricbench.slurm.cli import _build_plan
    from fabricbench.slurm.fabric_map import fabric_map

    path = tmp_path / "topology.yaml"
    path.write_text(render_yaml(make_plan(0, 6, 3, 400_000_000, oversubscription=2.0)))
    config = dict(pattern="circle", partners=3, repeat=2, seed=0, serial=False, sizes=[1 << 20], iters=5,
                  warmup=1, backend="gloo", retest_below=0.8, connect_timeout_s=30.0, pair_timeout_s=60.0,
                  timeout_s=600.0, fabric=fabric_map(str(path)), fit_uplinks=True)
    nodes = [f"lab{i}" for i in range(1, 7)]
    plan = _build_plan(config, nodes, str(tmp_path), "r1", local=False)
    assert plan.extra["fabric"]["fitted"] and plan.extra["fabric"]["leaves"][4] == "leaf3"
    assert plan.ordered  # rounds wait for each other: a round is who ran together
    assert [r["round"] for r in plan.rounds] == list(range(len(plan.rounds)))
    assert {r["repeat"] for r in plan.rounds} == {0, 1} and plan.pair_count() == 30
    config["fit_uplinks"] = False
    loose = _build_plan(config, nodes, str(tmp_path), "r1", local=False)
    assert len(loose.rounds) == 10 and not loose.extra["fabric"]["fitted"] and loose.ordered
    path.write_text(render_yaml(make_plan(0, 6, 3, 400_000_000)))  # non-blocking: no limit, no ordering
    config["fabric"], config["fit_uplinks"] = fabric_map(str(path)), True
    free = _build_plan(config, nodes, str(tmp_path), "r1", local=False)
    assert len(free.rounds) == 10 and not free.ordered and not free.extra["fabric"]["fitted"]


def test_a_sweep_that_timeout_would_cut_is_announced(capsys):
    from fabricbench.slurm.cli import _warn_if_too_long

    config = dict(pattern="circle", partners=3, repeat=2, serial=False, sizes=[1 << 20, 1 << 25],
                  measure_target_s=2.0, timeout_s=600.0)
    _warn_if_too_long(config, 8)  # 14 rounds x (2 s x 7 + 3 s) = 238 s: fits
    assert capsys.readouterr().err == ""
    _warn_if_too_long(config, 32)  # 62 rounds x 17 s = 1054 s
    err = capsys.readouterr().err
    assert "~1054 s" in err and "62 rounds" in err and "--timeout is 600 s" in err


def test_retest_repeats_suspect_pairs_with_different_co_runners():
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    rounds = schedule.repeat_rounds(pairs, 3, seed=1)
    flat = [p for r in rounds for p in r]
    assert sorted(flat) == sorted(pairs * 3)  # each suspect exactly 3 more times
    for r in rounds:  # disjoint pairs, at most ceil(sqrt(5)) = 3 per round
        nodes = [x for p in r for x in p]
        assert len(nodes) == len(set(nodes)) and len(r) <= 3
    # a pair's rounds do not all share the same co-runners (a repeated collision would not be a new reading)
    for p in pairs:
        mates = {tuple(sorted(q for q in r if q != p)) for r in rounds if p in r}
        assert len(mates) >= 2, (p, mates)
    assert schedule.repeat_rounds(pairs, 0) == [] and schedule.repeat_rounds([], 3) == []


def test_retest_plan_reruns_the_lowest_suspect_pairs():
    # two slow paths, the rest healthy
    _nodes, plan, records = _circle_sweep(6, lambda p: {(0, 1): 0.3, (2, 3): 0.5}.get(p, 1.0))
    assert retest_plan(plan, records, below=0.8) is None  # a full circle: no new partner, and no repeats asked
    re = retest_plan(plan, records, below=0.8, repeat_suspects=3, max_suspects=1)
    again = [tuple(p) for r in re.rounds for p in r["pairs"]]
    assert again == [(0, 1)] * 3  # only the lowest suspect (max_suspects=1), 3 more times, one per round
    assert [r["round"] for r in re.rounds] == [len(plan.rounds) + i for i in range(3)]
    re = retest_plan(plan, records, below=0.8, repeat_suspects=2)
    assert sorted(tuple(p) for r in re.rounds for p in r["pairs"]) == [(0, 1), (0, 1), (2, 3), (2, 3)]


def test_retest_plan_reruns_the_paths_the_analyzer_ranks_first():
    # the raw rule sees (0, 1) lowest; the analyzer ranks (3, 2) first (e.g. (0, 1) was a collision it explains)
    _nodes, plan, records = _circle_sweep(6, lambda p: {(0, 1): 0.3, (2, 3): 0.85}.get(p, 1.0))
    re = retest_plan(plan, records, below=0.8, repeat_suspects=2, max_suspects=1, ranked=[("n3", "n2"), ("n0", "n1")])
    assert [tuple(p) for r in re.rounds for p in r["pairs"]] == [(2, 3)] * 2
    # a path and its reverse are one pair to rerun (both directions run); never a node with itself
    re = retest_plan(plan, records, below=0.8, repeat_suspects=1, ranked=[("n3", "n2"), ("n2", "n3"), ("n4", "n4")])
    assert [tuple(p) for r in re.rounds for p in r["pairs"]] == [(2, 3)]
    # nothing below the raw rule, but the analyzer has a suspect: it is still rerun
    _nodes, plan, records = _circle_sweep(6, lambda p: 0.9 if p == (1, 4) else 1.0)
    re = retest_plan(plan, records, below=0.8, repeat_suspects=3, ranked=[("n4", "n1")])
    assert [tuple(p) for r in re.rounds for p in r["pairs"]] == [(1, 4)] * 3
    assert retest_plan(plan, records, below=0.8, repeat_suspects=3, ranked=[]) is None


def test_retest_repeats_never_put_two_pairs_on_one_leaf():
    leaves = ["l1", "l1", "l2", "l2", "l3", "l3", "l4", "l4"]
    pairs = [(0, 2), (1, 3), (4, 6), (5, 7), (0, 1)]  # (0,2) and (1,3) both cross l1-l2: they may collide
    rounds = schedule.repeat_rounds(pairs, 2, seed=3, leaves=leaves)
    assert sorted(p for r in rounds for p in r) == sorted(pairs * 2)
    for r in rounds:
        per_pair = [{leaves[x] for x in p} for p in r]
        assert all(not (a & b) for i, a in enumerate(per_pair) for b in per_pair[i + 1:]), r


def test_analyzer_suspects_fall_back_to_the_raw_rule_when_the_sweep_cannot_be_analyzed(tmp_path, capsys):
    from fabricbench.slurm.collect import analyzer_suspects

    assert analyzer_suspects(tmp_path) is None  # no plan.json: nothing to collect or analyze
    assert "retest chosen by the raw rule" in capsys.readouterr().err
