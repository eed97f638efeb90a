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


def reachable_log(src: np.ndarray, dst: np.ndarray, rnd: np.ndarray, size_idx: np.ndarray, leaf: np.ndarray,
                  oversubscription: float, phase: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros(len(src), dtype=np.float32)
    if oversubscription <= 1.0 or not len(src):
        return out
    ls, ld = leaf[src], leaf[dst]
    cross = (ls >= 0) & (ld >= 0) & (ls != ld)
    if not cross.any():
        return out
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
    return out
