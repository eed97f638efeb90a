"""What each pair measurement could reach in its round, from the topology's uplink capacity and the pairs that
ran together (rounds in the results).

A sweep runs many pairs at once. On a leaf whose uplinks carry less than its hosts can send (oversubscription
> 1), the cross-leaf pairs of one round share that capacity: a flow out of leaf k gets at most
U_k / (flows out of k in that round), where U_k = hosts on k / oversubscription (in units of one host's rate),
and the same into its destination leaf. `reachable_log` returns, per row, log(min(1, those shares)): the
analyzer judges each measurement against what it could reach, so contention is not blamed on a component.

Which flows were concurrent: rows of the same round, size and phase (fabricbench sweeps run, per size, a->b
then b->a; the importer keeps which). Without phases (other inputs), both directions of a pair are taken as
run one after the other, so a leaf's concurrent load is half its directed cross-leaf flows in that round
(rounded up): an estimate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def reachable_log(src: np.ndarray, dst: np.ndarray, rnd: np.ndarray, size_idx: np.ndarray, leaf: np.ndarray,
                  oversubscription: float, phase: np.ndarray | None = None) -> np.ndarray:
    return round_loads(src, dst, rnd, size_idx, leaf, oversubscription, phase)[0]


def round_loads(src: np.ndarray, dst: np.ndarray, rnd: np.ndarray, size_idx: np.ndarray, leaf: np.ndarray,
                oversubscription: float, phase: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log fair share, concurrent flows out of the source leaf, into the destination leaf) per row; the loads
    are 0 for rows that cross no uplink."""
    out = np.zeros(len(src), dtype=np.float32)
    lu = np.zeros(len(src), dtype=np.int32)
    lo = np.zeros(len(src), dtype=np.int32)
    if oversubscription <= 1.0 or not len(src):
        return out, lu, lo
    ls, ld = leaf[src], leaf[dst]
    cross = (ls >= 0) & (ld >= 0) & (ls != ld)
    if not cross.any():
        return out, lu, lo
    nl = int(leaf.max()) + 1
    hosts = np.bincount(leaf[leaf >= 0], minlength=nl).astype(np.float64)
    cap = hosts / oversubscription
    r = rnd.astype(np.int64)
    r = r - r.min()
    g = r * (int(size_idx.max()) + 1) + size_idx.astype(np.int64)
    known = phase is not None and len(phase) == len(src) and bool((phase >= 0).all())
    if known:  # the flows of one phase (a->b or b->a) of a round and size ran together: count them exactly
        g = g * 2 + phase.astype(np.int64)
    idx = np.flatnonzero(cross)
    up_key = g[idx] * nl + ls[idx]
    dn_key = g[idx] * nl + ld[idx]
    _, inv_u, cnt_u = np.unique(up_key, return_inverse=True, return_counts=True)
    _, inv_d, cnt_d = np.unique(dn_key, return_inverse=True, return_counts=True)
    div = 1.0 if known else 2.0
    load_u = np.ceil(cnt_u[inv_u] / div)
    load_d = np.ceil(cnt_d[inv_d] / div)
    share = np.minimum(1.0, np.minimum(cap[ls[idx]] / np.maximum(load_u, 1), cap[ld[idx]] / np.maximum(load_d, 1)))
    out[idx] = np.log(share).astype(np.float32)
    lu[idx], lo[idx] = load_u, load_d
    return out, lu, lo


def calibrate_loads(y: np.ndarray, size_idx: np.ndarray, load_u: np.ndarray, load_d: np.ndarray,
                    ls: np.ndarray, ld: np.ndarray, min_rows: int = 30, min_leaves: int = 5) -> tuple[np.ndarray, int]:
    """The fair share above assumes a leaf's flows split its uplinks evenly (adaptive routing). Under static
    ECMP hashing they do not: n flows hashed onto S links collide, and what a flow gets at a given load is
    below the even split by an amount that grows with the load. Rather than assume a routing, read it from the
    data: the cross-leaf measurements that ran under the same load (flows out of the source leaf, into the
    destination leaf, same size) across the fleet give what that load really yields, and each such measurement
    is judged against them. Only where the group is wide (rows from at least `min_leaves` source and
    destination leaves, none holding a third of it), so one slow leaf cannot set its own group's level.
    Returns the corrected values and how many groups were calibrated."""
    cross = load_u > 0
    if cross.sum() < min_rows:
        return y, 0
    y = y.astype(np.float32, copy=True)
    idx = np.flatnonzero(cross & np.isfinite(y))
    nl = int(max(ls.max(), ld.max())) + 1
    key = (size_idx[idx].astype(np.int64) * 4096 + load_u[idx]) * 4096 + load_d[idx]
    uk, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    med = pd.Series(y[idx]).groupby(inv).median().to_numpy()
    src_share = np.zeros((len(uk), nl))
    np.add.at(src_share, (inv, ls[idx]), 1.0)
    dst_share = np.zeros((len(uk), nl))
    np.add.at(dst_share, (inv, ld[idx]), 1.0)
    wide = ((cnt >= min_rows) & ((src_share > 0).sum(axis=1) >= min_leaves) & ((dst_share > 0).sum(axis=1) >= min_leaves)
            & (src_share.max(axis=1) <= cnt / 3) & (dst_share.max(axis=1) <= cnt / 3))
    if not wide.any():
        return y, 0
    sizes = size_idx[idx]
    shift = np.zeros(len(uk))
    for sz in np.unique(sizes):
        # the level every wide group is brought to: the least loaded wide group of this size, the nearest to an
        # uncontended flow, which is the level the even-split share gives the groups too narrow to judge by
        in_size = np.unique(inv[sizes == sz])
        cand = in_size[wide[in_size]]
        if not len(cand):
            continue
        loads = uk[cand] % (4096 * 4096)
        lightest = cand[np.argmin((loads // 4096) + (loads % 4096))]
        shift[cand] = med[cand] - med[lightest]
    before = {int(sz): float(np.median(y[idx][sizes == sz])) for sz in np.unique(sizes)}
    y[idx] -= shift[inv].astype(np.float32)
    for sz, level in before.items():  # the class keeps its level: only readings relative to each other move
        sel = idx[sizes == sz]
        y[sel] += np.float32(level - float(np.median(y[sel])))
    return y, int(wide.sum())
