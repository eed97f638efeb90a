"""Path tomography over a leaf/spine switch graph: which link lies on the bad paths and not on the good ones.

A cross-leaf path i -> j uses host i's port, leaf(i)'s uplinks (toward the spines), leaf(j)'s downlinks (from
the spines) and host j's port. With ECMP or adaptive routing a flow may take any spine, so the unit we can
blame is a leaf's uplink bundle, and the report says that the exact spine port is uncertain unless routes are
given. With only two leaves both bundles are on every cross-leaf path, so an uplink is identifiable only with
three or more leaves (REFERENCE.md); `identifiable()` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np


@dataclass
class LinkEvidence:
    leaf: int
    direction: str  # up (leaf -> spines) | down (spines -> leaf)
    bad_on: int  # bad paths through this bundle
    paths_on: int  # measured paths through it
    bad_off: int  # bad paths elsewhere (cross-leaf, not through it, healthy ends)
    paths_off: int

    @property
    def frac_on(self) -> float:
        return self.bad_on / self.paths_on if self.paths_on else 0.0

    @property
    def frac_off(self) -> float:
        return self.bad_off / self.paths_off if self.paths_off else 0.0


def identifiable(leaf: np.ndarray | None) -> bool:
    return leaf is not None and len(np.unique(leaf)) >= 3


def link_evidence(Y: np.ndarray, leaf: np.ndarray, healthy_src: np.ndarray, healthy_dst: np.ndarray,
                  bad_threshold: float) -> list[LinkEvidence]:
    """Counts, per leaf bundle and direction, of bad and good cross-leaf paths between healthy ends."""
    nl = int(leaf.max()) + 1
    with np.errstate(invalid="ignore"):
        ends = healthy_src[:, None] & healthy_dst[None, :] & (leaf[:, None] != leaf[None, :]) & np.isfinite(Y)
        bad = ends & (Y < -bad_threshold)
    key = (leaf.astype(np.int32)[:, None] * nl + leaf.astype(np.int32)[None, :])
    meas = np.bincount(key[ends], minlength=nl * nl).reshape(nl, nl).astype(np.float64)
    badc = np.bincount(key[bad], minlength=nl * nl).reshape(nl, nl).astype(np.float64)
    del key, ends, bad
    total_m, total_b = meas.sum(), badc.sum()
    out = []
    for k in range(nl):
        on_m, on_b = meas[k].sum(), badc[k].sum()
        out.append(LinkEvidence(k, "up", int(on_b), int(on_m), int(total_b - on_b - badc[:, k].sum() + badc[k, k]),
                                int(total_m - on_m - meas[:, k].sum() + meas[k, k])))
        on_m, on_b = meas[:, k].sum(), badc[:, k].sum()
        out.append(LinkEvidence(k, "down", int(on_b), int(on_m), int(total_b - on_b - badc[k].sum() + badc[k, k]),
                                int(total_m - on_m - meas[k].sum() + meas[k, k])))
    return out


@dataclass
class LeafTerms:
    """A leaf's cross-leaf traffic against the other leaves' (`leaf_terms`), in log units per direction."""
    up: np.ndarray  # per leaf: its traffic toward other leaves, relative to the median leaf (0 = like the others)
    down: np.ndarray  # per leaf: traffic into it from other leaves, likewise
    up_n: np.ndarray  # partner leaves behind each term
    down_n: np.ndarray
    rows: np.ndarray  # measurements behind each leaf's up (row 0) and down (row 1) term
    cell_spread: float  # robust sigma of one leaf-pair block's mean beyond the two leaves' terms
    resid_dof: int = 0  # blocks minus fitted terms: what cell_spread was estimated from (1 on a 3-leaf fabric)

    def judge(self, k: int, direction: str) -> tuple[float, float, int]:
        """(deficit in log units relative to the other leaves' median, its noise, partner leaves) for leaf k.
        The noise is the leaf term's own standard error (cell spread / sqrt(partner leaves)) combined with how
        much the *other* leaves' terms scatter beyond their standard errors: leaves can differ by a few percent
        on a healthy fabric (a fixed schedule and static routing give each leaf its own recurring collisions),
        and only a deficit beyond that scatter is the leaf's own."""
        t = self.up if direction == "up" else self.down
        n = self.up_n if direction == "up" else self.down_n
        if not np.isfinite(t[k]) or n[k] < 2:
            return 0.0, float("inf"), 0
        se = 1.2533 * self.cell_spread / np.sqrt(np.maximum(n, 1))
        others = np.flatnonzero((np.arange(len(t)) != k) & np.isfinite(t) & (n >= 2))
        if len(others) < 2:
            return 0.0, float("inf"), int(n[k])
        tau2 = max(0.0, float(np.var(t[others], ddof=1)) - float(np.mean(se[others] ** 2)))
        return float(np.median(t[others]) - t[k]), float(np.sqrt(se[k] ** 2 + tau2)), int(n[k])

    def scatter_dof(self, k: int, direction: str) -> float:
        """Effective degrees of freedom of `judge`'s noise (Welch-Satterthwaite): the term's standard error comes
        from hundreds of measurements, the other leaves' scatter from (other leaves - 1) degrees of freedom. When
        the scatter dominates, as on a 3-leaf fabric whose two other leaves say next to nothing about how far
        healthy leaves differ, the margin must be read on a t tail with few degrees of freedom. The standard
        error's own spread comes from the block fit's residual degrees of freedom (blocks - fitted terms)."""
        t = self.up if direction == "up" else self.down
        n = self.up_n if direction == "up" else self.down_n
        others = np.flatnonzero((np.arange(len(t)) != k) & np.isfinite(t) & (n >= 2))
        if len(others) < 2:
            return 1.0
        se = 1.2533 * self.cell_spread / np.sqrt(np.maximum(n, 1))
        tau2 = max(0.0, float(np.var(t[others], ddof=1)) - float(np.mean(se[others] ** 2)))
        se2 = float(se[k] ** 2)
        return (se2 + tau2) ** 2 / (tau2 ** 2 / (len(others) - 1) + se2 ** 2 / max(self.resid_dof, 1))


def student_t_sf(x: float, dof: float) -> float:
    """P(T > x) for Student's t (Abramowitz & Stegun 26.7.3-4, closed forms in theta = atan(x / sqrt(dof))); a
    fractional dof is rounded down (a heavier tail: conservative); the normal tail beyond 60 degrees of freedom."""
    dof = max(int(dof), 1)
    if dof > 60:
        return 0.5 * math.erfc(x / math.sqrt(2))
    th = math.atan(abs(x) / math.sqrt(dof))
    c2, s = math.cos(th) ** 2, math.sin(th)
    if dof % 2:  # odd
        term, acc = 1.0, 0.0
        if dof > 1:
            acc = term = math.cos(th)
            for j in range(1, (dof - 3) // 2 + 1):
                term *= c2 * (2 * j) / (2 * j + 1)
                acc += term
        inside = 2 / math.pi * (th + s * acc)
    else:
        term = acc = 1.0
        for j in range(1, (dof - 2) // 2 + 1):
            term *= c2 * (2 * j - 1) / (2 * j)
            acc += term
        inside = s * acc
    upper = max(0.0, (1 - inside) / 2)
    return upper if x >= 0 else 1 - upper


def leaf_terms(y: np.ndarray, src: np.ndarray, dst: np.ndarray, leaf: np.ndarray, ok: np.ndarray,
               min_rows: int = 3, iterations: int = 10) -> LeafTerms | None:
    """Every leaf's aggregate cross-leaf traffic against the other leaves', from single measurements.

    `y` is each measurement's normalized log bandwidth, already judged against what it could reach in its round
    (contention.py), so a sweep's own schedule loads every leaf alike. Block (a, b) is the mean of every
    measurement from leaf a to leaf b whose ends are healthy; an additive fit (median polish)
    block[a, b] = level + up[a] + down[b] + e separates a leaf's uplinks (its row) from a slow destination leaf
    (its column): one bad leaf does not move the others' terms. A per-path test cannot see a leaf uplink that is
    15-30% short when collisions spread single paths by 30%: a leaf's term averages hundreds of paths over every
    round, and the collisions (random pairs, not one leaf) average out of it, while a short uplink holds every
    one of its paths down under the same schedule.
    """
    if leaf is None or not len(y):
        return None
    nl = int(leaf.max()) + 1
    if nl < 3:
        return None
    ls, ld = leaf[src].astype(np.int64), leaf[dst].astype(np.int64)
    sel = ok & (ls != ld) & (ls >= 0) & (ld >= 0) & np.isfinite(y)
    if sel.sum() < min_rows * nl:
        return None
    key = ls[sel] * nl + ld[sel]
    cnt = np.bincount(key, minlength=nl * nl).reshape(nl, nl)
    sums = np.bincount(key, weights=y[sel].astype(np.float64), minlength=nl * nl).reshape(nl, nl)
    Z = np.where(cnt >= min_rows, sums / np.maximum(cnt, 1), np.nan)
    np.fill_diagonal(Z, np.nan)
    if np.isfinite(Z).sum() < 2 * nl:
        return None
    up, down = np.zeros(nl), np.zeros(nl)
    level = float(np.nanmedian(Z))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a leaf with no measured block: NaN, judged as unknown
        for _ in range(iterations):
            R = Z - level - up[:, None] - down[None, :]
            up += np.nan_to_num(np.nanmedian(R, axis=1))
            R = Z - level - up[:, None] - down[None, :]
            down += np.nan_to_num(np.nanmedian(R, axis=0))
            level += float(np.median(up)) + float(np.median(down))
            up -= np.median(up)
            down -= np.median(down)
        E = Z - level - up[:, None] - down[None, :]
    e = E[np.isfinite(E)]
    spread = 1.4826 * float(np.median(np.abs(e - np.median(e)))) if e.size >= 3 else float("inf")
    up_n, down_n = np.isfinite(Z).sum(axis=1), np.isfinite(Z).sum(axis=0)
    rows = np.stack([np.where(np.isfinite(Z), cnt, 0).sum(axis=1), np.where(np.isfinite(Z), cnt, 0).sum(axis=0)])
    up = np.where(up_n > 0, up, np.nan)
    down = np.where(down_n > 0, down, np.nan)
    resid_dof = int(np.isfinite(Z).sum()) - (2 * nl - 1)
    return LeafTerms(up, down, up_n, down_n, rows, max(spread, 1e-4), resid_dof)
