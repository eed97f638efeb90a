import numpy as np
import pytest

from fabricbench.engine import stats
from fabricbench.engine.inject import FaultPoint, parse
from fabricbench.errors import UsageError


def test_time_reduce_modes():
    t = np.array([10.0, 20.0, 60.0])
    assert stats.reduce_across_ranks(t, "avg") == 30.0
    assert stats.reduce_across_ranks(t, "max") == 60.0
    assert stats.reduce_across_ranks(t, "min") == 10.0
    assert stats.reduce_across_ranks(t, "rank0") == 10.0


def test_iteration_stats():
    s = stats.iteration_stats(np.array([10.0] * 99 + [1000.0]))
    assert s["min_us"] == 10.0 and s["p50_us"] == 10.0 and s["max_us"] == 1000.0
    assert s["p99_us"] > 10.0 and s["cv_pct"] > 100


def test_straggler_is_the_rank_that_waits_least_at_the_barrier():
    waits = np.full((4, 10), 500.0)
    waits[2, :] = 20.0  # rank 2 arrives last: it hardly waits
    rank, late = stats.straggler(waits)
    assert rank == 2 and late == pytest.approx(480.0)
    assert stats.straggler(np.zeros((1, 5))) is None


def test_inject_parse():
    faults = parse("corrupt@1,die@2:after=3")
    assert [(f.kind, f.rank, f.after) for f in faults] == [("corrupt", 1, 0), ("die", 2, 3)]
    for bad in ("explode@1", "die@x", "die@1:before=2", "die"):
        with pytest.raises(UsageError):
            parse(bad)


def test_fault_point_counts_calls_for_other_ranks_without_acting():
    point = FaultPoint(0, {"FABRICBENCH_INJECT": "die@1"})
    for _ in range(5):
        point()  # rank 0 is not the target: nothing happens
