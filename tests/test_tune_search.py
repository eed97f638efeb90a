"""The tuning search on deterministic objectives: halving finds the per-size best with fewer runs than
exhaustive, drops clearly slower candidates, rejects failing ones and goes on; coordinate descent finds the
minimum of unimodal resource knobs; the ratio interval claims gains only when they hold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fabricbench.tune.search import (Candidate, DefaultFailed, Sample, coordinate_descent, exhaustive,
                                     per_size_best, successive_halving)
from fabricbench.tune.stats import ratio_ci

SIZES = [1024, 65536, 4194304]
# time (µs) per size for each candidate: 'a' wins small, 'c' wins large, 'slow' is 3x worse everywhere.
TABLE = {"default": [10, 100, 1000], "a": [5, 120, 1500], "b": [11, 90, 1100], "c": [12, 130, 700],
         "slow": [30, 300, 3000], "slow2": [40, 400, 4000], "bad": [1, 1, 1]}


def _cands(names):
    return [Candidate(n, (), n, (), is_default=(n == "default")) for n in names]


class Objective:
    """Deterministic: the same candidate always measures the same; 'bad' returns wrong data."""

    def __init__(self, noise=0.0, seed=0):
        self.calls: list[str] = []
        self.rng = np.random.default_rng(seed)
        self.noise = noise

    def __call__(self, cand, rnd, phase):
        self.calls.append(cand.name)
        if cand.name == "bad":
            return Sample(cand.name, rnd, phase, "wrong-data", reason="3 wrong values", nwrong=3)
        times = {s: t * (1 + self.noise * self.rng.standard_normal()) for s, t in zip(SIZES, TABLE[cand.name])}
        return Sample(cand.name, rnd, phase, "ok", times)


def test_halving_finds_the_per_size_best_with_fewer_runs_than_exhaustive():
    names = ["default", "a", "b", "c", "slow", "slow2"]
    fast, full = Objective(), Objective()
    halved = successive_halving(_cands(names), fast, drop_factor=1.5, min_samples=2)
    exh = exhaustive(_cands(names), full, repeats=3)
    winners = {s: n for s, (n, _t) in per_size_best(halved, halved.survivors).items()}
    truth = {s: n for s, (n, _t) in per_size_best(exh, exh.survivors).items()}
    assert winners == truth == {1024: "a", 65536: "b", 4194304: "c"}
    assert len(fast.calls) == 6 + 4 and len(full.calls) == 6 * 3  # round 0: all; round 1: the 4 that stay
    # the clearly slower ones ran once and were dropped
    assert fast.calls.count("slow") == 1 and fast.calls.count("slow2") == 1
    assert set(halved.survivors) == {"default", "a", "b", "c"}


def test_a_wrong_data_candidate_is_rejected_named_and_the_search_goes_on():
    obj = Objective()
    ledger = successive_halving(_cands(["default", "bad", "a", "c"]), obj)
    assert ledger.rejected == {"bad": "wrong-data: 3 wrong values"}
    assert obj.calls.count("bad") == 1  # never measured again
    assert "bad" not in ledger.survivors
    best = per_size_best(ledger, ledger.survivors)
    assert best[1024][0] == "a" and best[4194304][0] == "c"  # despite 'bad' reporting 1 µs


def test_the_default_failing_stops_the_search():
    def broken(cand, rnd, phase):
        return Sample(cand.name, rnd, phase, "failed" if cand.is_default else "ok", {1024: 1.0}, reason="rank 1 died")

    with pytest.raises(DefaultFailed, match="rank 1 died"):
        successive_halving(_cands(["default", "a"]), broken)


def test_halving_keeps_winners_under_noise():
    ledger = successive_halving(_cands(["default", "a", "b", "c", "slow"]), Objective(noise=0.03, seed=4))
    best = {s: n for s, (n, _t) in per_size_best(ledger, ledger.survivors).items()}
    assert best == {1024: "a", 65536: "b", 4194304: "c"}


def test_coordinate_descent_finds_the_unimodal_minimum_with_few_evaluations():
    axes = {"channels": [1, 2, 4, 8, 16, 32, 64], "nthreads": [64, 128, 256, 512], "buff": [1, 2, 4, 8, 16]}

    def cost(p):  # separable, unimodal along each axis; minimum at channels=16, nthreads=256, buff=4
        return (math.log2(p["channels"]) - 4) ** 2 + (math.log2(p["nthreads"]) - 8) ** 2 + (math.log2(p["buff"]) - 2) ** 2

    point, value, evals = coordinate_descent({"channels": 4, "nthreads": 64, "buff": 1}, axes, cost)
    assert point == {"channels": 16, "nthreads": 256, "buff": 4} and value == 0
    assert evals < 7 * 4 * 5 / 4  # far fewer than the 140-point grid


def test_coordinate_descent_never_picks_a_failed_point():
    axes = {"x": [0, 1, 2, 3, 4]}
    point, _v, _n = coordinate_descent({"x": 0}, axes, lambda p: None if p["x"] == 3 else -p["x"])
    assert point == {"x": 2}  # 3 fails (None), so the walk stops before it


def test_ratio_ci_claims_only_what_holds():
    rng = np.random.default_rng(1)
    base = 100 * (1 + 0.02 * rng.standard_normal(6))
    faster = ratio_ci(base, base / 1.2 * (1 + 0.02 * rng.standard_normal(6)))
    assert faster.significant_gain and 1.1 < faster.speedup < 1.3 and faster.low > 1
    same = ratio_ci(base, base * (1 + 0.05 * rng.standard_normal(6)))
    assert not same.significant_gain and same.low < 1 < same.high and same.verdict == "no significant gain"
    slower = ratio_ci(base, base * 1.3)
    assert slower.verdict == "slower"
    assert ratio_ci([100.0], [50.0]).verdict.startswith("inconclusive")
    # known value: log ratios [ln 2, ln 2] -> exactly 2x with zero width
    exact = ratio_ci([2.0, 4.0], [1.0, 2.0])
    assert exact.speedup == pytest.approx(2.0) and exact.low == pytest.approx(2.0)
