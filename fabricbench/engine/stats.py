"""Reducing times across ranks and iterations (nccl-tests `-a`: 0 rank0, 1 avg (default), 2 min, 3 max)."""

from __future__ import annotations

import numpy as np

TIME_REDUCE = ("avg", "max", "min", "rank0")


def reduce_across_ranks(values: np.ndarray, how: str) -> np.ndarray | float:
    """`values`: shape (ranks,) or (ranks, iters); reduced along the rank axis."""
    if how == "avg":
        return values.mean(axis=0)
    if how == "max":
        return values.max(axis=0)
    if how == "min":
        return values.min(axis=0)
    if how == "rank0":
        return values[0]
    raise ValueError(how)


def iteration_stats(times_us: np.ndarray) -> dict[str, float]:
    """min/p50/p99/max and coefficient of variation (percent) of per-iteration times."""
    if times_us.size == 0:
        return {}
    mean = float(times_us.mean())
    return {
        "min_us": float(times_us.min()),
        "p50_us": float(np.percentile(times_us, 50)),
        "p99_us": float(np.percentile(times_us, 99)),
        "max_us": float(times_us.max()),
        "cv_pct": float(times_us.std() / mean * 100.0) if mean > 0 else 0.0,
    }


def straggler(barrier_wait_us: np.ndarray) -> tuple[int, float] | None:
    """From per-rank barrier waits (ranks × iters), the rank that arrived last most often and its lateness.

    The last rank to reach a barrier waits the least; its lateness is how much less it waited than the
    median of the others. Waits are measured on each rank's own clock, so clock skew between hosts does not
    enter.
    """
    if barrier_wait_us.ndim != 2 or barrier_wait_us.shape[0] < 2 or barrier_wait_us.shape[1] == 0:
        return None
    last = barrier_wait_us.argmin(axis=0)
    counts = np.bincount(last, minlength=barrier_wait_us.shape[0])
    rank = int(counts.argmax())
    lateness = []
    for it in np.nonzero(last == rank)[0]:
        others = np.delete(barrier_wait_us[:, it], rank)
        lateness.append(float(np.median(others) - barrier_wait_us[rank, it]))
    return rank, float(np.median(lateness))
