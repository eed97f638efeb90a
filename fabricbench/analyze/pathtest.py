"""Is one path slow beyond its ends? A test whose power grows with the measurements a path has.

Unit: one (path, round), the best of its sizes in that round less what the fit of its ends explains (a dip of one
size leaves the round's other sizes normal; a transient that lasts the round hits them all). Where concurrent
flows can collide, a cross-leaf path's rounds that ran with the same co-runners (a repeated schedule under static
routing repeats the collision) are one unit, the best of them.

Null: the class's pooled units (every path of the class, inside a leaf or across leaves): the data's own noise,
heavy tails, dips and collisions included, with a Student-t (3 d.o.f.) tail beyond the last reading.

Statistic: for a path with k units sorted u(1) <= ... <= u(k), "at least j of k units at or below u(j)" has
probability BinomialTail(j; k, F(u(j))) if the path were like the rest; the smallest over j from a majority
(at least 2) to k, times the j tried, is the path's p-value. j = k is "every unit this low" (the product rule
F^k); a majority lets a path with many rounds, a retest's, show a modest deficit whose best reading alone is
within the noise. Times the paths tested, it is the expected number of such paths by chance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def binom_sf(j: int, k: int, q: float) -> float:
    """P(X >= j) for X ~ Binomial(k, q), exact to double precision. Summed from the term at j away from the
    mode (the upper tail, or one less the lower one), each term from the last by the ratio of successive
    binomial terms, stopping once the rest cannot matter: a host's thousands of partners cost tens of terms."""
    if j <= 0:
        return 1.0
    if j > k or q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lq, l1q = math.log(q), math.log1p(-q)
    r = q / (1.0 - q)

    def term(x: int) -> float:
        return math.exp(math.lgamma(k + 1) - math.lgamma(x + 1) - math.lgamma(k - x + 1) + x * lq + (k - x) * l1q)

    if j >= (k + 1) * q:  # at or above the mode: the terms fall from j upward
        t = total = term(j)
        x = j
        while x < k and t > total * 1e-17:
            t *= (k - x) / (x + 1) * r
            x += 1
            total += t
        return min(1.0, total)
    t = below = term(j - 1)  # below the mode: the terms fall from j - 1 downward
    x = j - 1
    while x > 0 and t > below * 1e-17:
        t *= x / ((k - x + 1) * r)
        x -= 1
        below += t
    return min(1.0, max(0.0, 1.0 - below))


def t3_tail(depth: float, spread: float) -> float:
    """P(a unit lies `depth` (log units) below 0) for Student-t noise with 3 d.o.f. and robust spread `spread`
    (heavier-tailed than measured fabric noise: used only beyond the data's own last reading)."""
    if not spread > 0 or not math.isfinite(depth):
        return 1.0
    t = max(depth, 0.0) / spread * 1.134  # 1.4826 x MAD of a unit t3 is 1.134
    upper = 0.5 - (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3))) / math.pi
    return max(upper, 1e-300)


class Null:
    """The pooled units of one class: F(x) = P(unit <= x), from the data's rank, the t3 tail beyond it."""

    def __init__(self, values: np.ndarray):
        v = np.sort(values[np.isfinite(values)])
        self.values = v
        self.spread = 1.4826 * float(np.median(np.abs(v - np.median(v)))) if v.size >= 3 else float("nan")

    def cdf(self, x: float, own: int = 0) -> float:
        n = len(self.values)
        below = max(int(np.searchsorted(self.values, x, side="right")) - own, 0)
        q = (below + 1) / (n + 1)
        if below == 0:  # beyond every reading the data has: its rank only bounds the tail at 1/(N+1)
            q = min(q, t3_tail(-x, self.spread))
        return q


def scan_p(units: np.ndarray, null: Null) -> tuple[float, int]:
    """(p-value, j) of `units` (one path's) against `null`: see the module docstring. The path's own units are
    left out of the null's rank."""
    u = np.sort(np.asarray(units, dtype=np.float64))
    k = len(u)
    if k == 0:
        return 1.0, 0
    start = min(k, max(2, math.ceil(k / 2)))
    best, best_j, tries = 1.0, k, 0
    for j in range(start, k + 1):
        x = float(u[j - 1])
        q = null.cdf(x, own=j)
        p = binom_sf(j, k, q)
        tries += 1
        if p < best:
            best, best_j = p, j
    return min(1.0, best * tries), best_j


def repeat_correlation(path: np.ndarray, tag: np.ndarray, value: np.ndarray, signature: dict[int, int],
                       among: np.ndarray) -> tuple[float, int]:
    """(dependence, pairs) between a path's units in two rounds that ran with the same co-runners, over the paths
    `among[path]` marks: the larger of their Spearman correlation and how often a reading in the low tail
    recurs in its repeat. Near 1 when collisions recur with the schedule (static routing), near 0 when each
    round is a fresh draw (adaptive routing, no contention)."""
    sel = among[path]
    if not sel.any():
        return 0.0, 0
    ur, rinv = np.unique(tag[sel], return_inverse=True)
    _, scode = np.unique(np.array([signature.get(int(r), int(r)) for r in ur], dtype=np.uint64), return_inverse=True)
    key = path[sel].astype(np.int64) * (int(scode.max()) + 1) + scode[rinv]
    _, kinv, kcnt = np.unique(key, return_inverse=True, return_counts=True)
    rep = kcnt[kinv] >= 2  # only paths measured again with the same co-runners say anything here
    if not rep.any():
        return 0.0, 0
    frame = pd.DataFrame({"p": path[sel][rep], "s": scode[rinv][rep], "v": value[sel][rep]})
    frame["k"] = frame.groupby(["p", "s"]).cumcount()
    wide = frame[frame["k"] < 2].pivot_table(index=["p", "s"], columns="k", values="v")
    if 1 not in wide.columns:
        return 0.0, 0
    wide = wide.dropna()
    if len(wide) < 50:
        return 0.0, int(len(wide))
    r = wide.rank()
    rho = float(np.corrcoef(r[0], r[1])[0, 1])
    # what matters is the low tail: where most flows ran uncollided (rounds fitted to the uplinks) the few that
    # collided barely move the correlation, yet each of them is low in every repeat. Of the readings in the
    # lowest 2% (one of the two), the share whose repeat is as low: ~1% for fresh draws, most for collisions
    x, z = wide[0].to_numpy(), wide[1].to_numpy()
    q = float(np.quantile(np.r_[x, z], 0.02))
    one = (x <= q) | (z <= q)
    recur = float(((x <= q) & (z <= q)).sum() / max(one.sum(), 1))
    return max(rho, recur), int(len(wide))


def path_units(row_y: np.ndarray, src: np.ndarray, dst: np.ndarray, rnd: np.ndarray, n: int,
               signature: dict[int, int] | None = None, collapse: np.ndarray | None = None,
               with_tags: bool = False):
    """(path id = src * n + dst, unit value) per unit. `row_y` is each row's residual (NaN: not judged).
    `collapse[path]` True: rounds with the same `signature` (co-runner set) are one unit. `with_tags`: also each
    unit's round (or -1 - signature code where merged)."""
    ok = np.isfinite(row_y)
    s, d, r, y = src[ok].astype(np.int64), dst[ok].astype(np.int64), rnd[ok].astype(np.int64), row_y[ok]
    path = s * n + d
    tag = r.copy()
    if signature and collapse is not None:
        sig = np.array([signature.get(int(x), int(x)) for x in np.unique(r)], dtype=np.uint64)
        ur, inv = np.unique(r, return_inverse=True)
        _, sig_code = np.unique(sig, return_inverse=True)
        merged = collapse[path]
        tag = np.where(merged, -1 - sig_code[inv].astype(np.int64), r)
    shift = tag - tag.min() if len(tag) else tag
    key = path * (int(shift.max()) + 1 if len(shift) else 1) + shift
    del shift
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    del key
    best = np.full(len(first), -np.inf)
    np.fmax.at(best, inv, y)
    if with_tags:
        return path[first], best, tag[first]
    return path[first], best


def both_ways(ab: np.ndarray, ab_tags: np.ndarray, ba: np.ndarray, ba_tags: np.ndarray) -> np.ndarray:
    """A pair slow both ways, one unit per round: the two directions of one round share its transients (a
    round-long dip hits both), so a round counts once, as the better of its two directions (the round is low
    only if both are); a round with one direction measured keeps it."""
    vals: dict[int, float] = {}
    for t, v in zip(ab_tags.tolist(), ab.tolist()):
        vals[t] = v
    for t, v in zip(ba_tags.tolist(), ba.tolist()):
        vals[t] = max(vals[t], v) if t in vals else v
    return np.array(list(vals.values()), dtype=np.float64)


def group_medians(path: np.ndarray, value: np.ndarray):
    """(paths, first index, count, median) per path over units sorted by (path, value) (vectorized: one sort), and
    the sort order used."""
    # one float sort: the path id plus the value squeezed monotonically into [0.25, 0.75) (a lexsort of millions
    # of units costs several times more)
    order = np.argsort(path.astype(np.float64) + 0.5 + np.arctan(value) / (2.0 * np.pi), kind="stable")
    p, v = path[order], value[order]
    paths, first, counts = np.unique(p, return_index=True, return_counts=True)
    med = 0.5 * (v[first + (counts - 1) // 2] + v[first + counts // 2])
    return paths, first, counts, med, order


def retest_units(path: np.ndarray, value: np.ndarray, tag: np.ndarray,
                 retest_rounds: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{path: (units, rounds)} of the paths measured in the sweep and again in its retest, their retest rounds
    only. A retest runs the paths the sweep read low: on the sweep's rounds they were selected for being low, so
    what confirms them is the retest's rounds alone, times the paths retested (not the thousands swept)."""
    if not len(retest_rounds) or not len(path):
        return {}
    again = np.isin(tag, retest_rounds)
    if not again.any():
        return {}
    sel = again & np.isin(path, np.unique(path[~again]))
    order = np.argsort(path[sel], kind="stable")
    p, v, t = path[sel][order], value[sel][order], tag[sel][order]
    ids, first = np.unique(p, return_index=True)
    ends = np.r_[first[1:], len(p)]
    return {int(x): (v[a:b], t[a:b]) for x, a, b in zip(ids, first, ends)}


def resolvable_depth(null: Null, k: int, tests: float, budget: float, sigmas: float) -> float:
    """The smallest depth (log units below what a path's ends explain) at which a path whose k units all read
    that low is blamed: its scan p-value times `tests` within `budget`, and its level `sigmas` standard errors
    of the class's units. A fault on one path alone shallower than this is beyond what the data can resolve
    (its readings scatter about its depth, so it is found about half the time at somewhat more). inf where no
    depth is (too few units)."""
    if k < 2 or not null.spread > 0:
        return math.inf

    def blamed(depth: float) -> bool:
        p, _ = scan_p(np.full(k, -depth), null)
        return p * tests <= budget and depth >= sigmas * null.spread / math.sqrt(k)

    lo, hi = 0.0, 8.0  # exp(-8): 99.97% below
    if not blamed(hi):
        return math.inf
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if blamed(mid) else (mid, hi)
    return hi


def median_p(x: float, m: int, null: Null) -> float:
    """P(the median of m draws from `null` is at or below x): at least half of them (ceil(m / 2)) at or below
    it. A host's term is the median over its partners; this is its p-value without assuming the noise normal."""
    if m < 1:
        return 1.0
    return binom_sf(math.ceil(m / 2), m, null.cdf(x))
