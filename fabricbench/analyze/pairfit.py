"""Directed pair matrices: a robust min-model fit of a send term and a receive term per node.

`Y[i, j]` is log(bandwidth from i to j) minus the fleet median of its path class and size (so 0 is normal and
-0.1 is 10% slow). A pair is bounded by its worst element:

    Y[i, j] ~ min(send[i], recv[j], up[leaf(i)], down[leaf(j)]) + e[i, j]     (up/down only across leaves)

so two bad ends give the minimum, not the product. Each term is the median of the measurements through it
whose other elements are healthy, estimated in rounds (uplinks first, since one uplink explains many pairs and
is the simpler explanation, then send, then receive terms). An uplink term is the best of its hosts' medians
(every host on a leaf sees an uplink fault; one bad host does not make its neighbours slow). A large negative residual `e[i, j]` with healthy
ends is the path between them. The leaf uplink terms are the path tomography of the switch graph (see
tomography.py for the bad-path / good-path counts that back them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PairFit:
    send: np.ndarray
    recv: np.ndarray
    send_n: np.ndarray
    recv_n: np.ndarray
    up: np.ndarray | None
    down: np.ndarray | None
    up_n: np.ndarray | None
    down_n: np.ndarray | None
    predicted: np.ndarray
    residual: np.ndarray
    spread: float  # robust sigma of the residuals (floored)
    offsets: np.ndarray  # per path class: the healthy paths' level relative to the input's reference


def _nanmedian_axis(m: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Median ignoring NaN along an axis, and how many values it used (vectorized: one sort)."""
    s = np.sort(m, axis=axis)  # NaN sort last
    count = np.sum(np.isfinite(m), axis=axis)
    if axis == 0:
        s = s.T
    n = s.shape[0]
    lo = np.maximum((count - 1) // 2, 0)
    hi = np.maximum(count // 2, 0)
    rows = np.arange(n)
    med = 0.5 * (s[rows, np.minimum(lo, s.shape[1] - 1)] + s[rows, np.minimum(hi, s.shape[1] - 1)])
    med = np.where(count > 0, med, np.nan)
    return med, count


def _agree(meds: np.ndarray, counts: np.ndarray, min_support: int) -> tuple[float, int]:
    """A leaf's uplink term: the best of its hosts' medians through it. An uplink fault slows every host on
    the leaf, one bad host does not slow its neighbours, so the uplink is only as bad as its best host says."""
    ok = counts >= min_support
    if not ok.any():
        return float("nan"), 0
    return float(np.max(meds[ok])), int(counts[ok].sum())


def fit(Y0: np.ndarray, leaf: np.ndarray | None = None, explain: float = 0.04, min_support: int = 3,
        iterations: int = 6, floor: float = 0.01, cls: np.ndarray | None = None) -> PairFit:
    """Fit the min-model to a square matrix (NaN = not measured). `leaf[i]` is node i's leaf index or None;
    `cls` (int8 matrix, optional) gives each cell's path class, whose healthy level is estimated as it goes
    (a class median is dragged down when one uplink touches many of its paths; the healthy level is not)."""
    n = Y0.shape[0]
    Y0 = Y0.astype(np.float32, copy=False)
    ncls = int(cls.max()) + 1 if cls is not None else 1
    offsets = np.zeros(ncls)
    Y = Y0
    send = np.zeros(n)
    recv = np.zeros(n)
    send_n = np.zeros(n, dtype=np.int64)
    recv_n = np.zeros(n, dtype=np.int64)
    use_leaf = leaf is not None and len(np.unique(leaf)) >= 2
    if use_leaf:
        nl = int(leaf.max()) + 1
        up = np.zeros(nl)
        down = np.zeros(nl)
        up_n = np.zeros(nl, dtype=np.int64)
        down_n = np.zeros(nl, dtype=np.int64)
        cross = leaf[:, None] != leaf[None, :]
        members = [np.flatnonzero(leaf == k) for k in range(nl)]
    else:
        up = down = up_n = down_n = None
        cross = None
        members = []
    nan = np.float32(np.nan)
    pred = None
    for _ in range(iterations):
        prev = (send.copy(), recv.copy(), None if up is None else up.copy(), None if down is None else down.copy())
        if cls is not None:
            if pred is None:  # start: median over nodes of each node's median (robust to one bad uplink)
                for c in range(ncls):
                    m = np.where(cls == c, Y0, np.float32(np.nan))
                    rm, rc = _nanmedian_axis(m, axis=1)
                    cm, cc = _nanmedian_axis(m, axis=0)
                    both = np.concatenate([rm[rc > 0], cm[cc > 0]])
                    if both.size:
                        offsets[c] = float(np.median(both))
                    del m
            else:
                with np.errstate(invalid="ignore"):
                    base = (pred > -explain) & np.isfinite(Y0)
                for c in range(ncls):
                    vals = Y0[base & (cls == c)]
                    if vals.size >= 3:
                        offsets[c] = float(np.median(vals))
            Y = Y0 - offsets.astype(np.float32)[cls]
        s_ok = send > -explain
        r_ok = recv > -explain
        if use_leaf:
            ends = s_ok[:, None] & r_ok[None, :] & cross
            d_ok = down > -explain
            m = np.where(ends & d_ok[leaf][None, :], Y, nan)
            row_med, row_cnt = _nanmedian_axis(m, axis=1)
            for k, rows in enumerate(members):
                med, cnt = _agree(row_med[rows], row_cnt[rows], min_support)
                # no healthy-ended path through it: its measurements are explained by their ends
                up[k], up_n[k] = (min(0.0, med), cnt) if cnt >= min_support else (0.0, 0)
            u_ok = up > -explain
            m = np.where(ends & u_ok[leaf][:, None], Y, nan)
            col_med, col_cnt = _nanmedian_axis(m, axis=0)
            for k, cols in enumerate(members):
                med, cnt = _agree(col_med[cols], col_cnt[cols], min_support)
                down[k], down_n[k] = (min(0.0, med), cnt) if cnt >= min_support else (0.0, 0)
            d_ok = down > -explain
            path_ok = ~cross | (u_ok[leaf][:, None] & d_ok[leaf][None, :])
            del m, ends
        else:
            path_ok = None
        mask = r_ok[None, :] if path_ok is None else (r_ok[None, :] & path_ok)
        med, cnt = _nanmedian_axis(np.where(mask, Y, nan), axis=1)
        good = cnt >= min_support
        send = np.where(good, np.minimum(0.0, np.nan_to_num(med)), 0.0)
        send_n = np.where(good, cnt, 0)
        s_ok = send > -explain
        mask = s_ok[:, None] if path_ok is None else (s_ok[:, None] & path_ok)
        med, cnt = _nanmedian_axis(np.where(mask, Y, nan), axis=0)
        good = cnt >= min_support
        recv = np.where(good, np.minimum(0.0, np.nan_to_num(med)), 0.0)
        recv_n = np.where(good, cnt, 0)
        del mask
        pred = np.minimum(send[:, None], recv[None, :]).astype(np.float32)
        if use_leaf:
            pred = np.where(cross, np.minimum(pred, np.minimum(up[leaf][:, None], down[leaf][None, :]).astype(np.float32)), pred)
        same = np.allclose(prev[0], send, atol=2e-3) and np.allclose(prev[1], recv, atol=2e-3)
        if use_leaf:
            same = same and np.allclose(prev[2], up, atol=2e-3) and np.allclose(prev[3], down, atol=2e-3)
        if same:
            break
    pred = np.minimum(send[:, None], recv[None, :]).astype(np.float32)
    if use_leaf:
        pred = np.where(cross, np.minimum(pred, np.minimum(up[leaf][:, None], down[leaf][None, :])), pred)
    np.fill_diagonal(pred, np.nan)
    resid = Y - pred
    r = resid[np.isfinite(resid)]
    if r.size >= 3:
        med = float(np.median(r))
        spread = max(1.4826 * float(np.median(np.abs(r - med))), floor)
    else:
        spread = max(floor, 0.03)
    return PairFit(send, recv, send_n, recv_n, up, down, up_n, down_n, pred, resid, spread, offsets)
