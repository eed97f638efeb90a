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
