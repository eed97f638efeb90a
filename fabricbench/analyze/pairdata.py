"""From pair rows to a dense directed matrix Y[i, j] of normalized log bandwidth.

Steps (vectorized; millions of rows in seconds):
1. node codes for sender and receiver; bandwidth sizes (those whose fleet median reaches half the best size's:
   small sizes measure latency, not the path's bandwidth);
2. normalization per path class (intra-leaf, inter-leaf, or inter-node) and size: log(bw) - fleet median;
3. optional round correction (off by default): subtracting each round's median removes noise shared by a
   round, but a round's median also moves with which faulty paths it happens to hold, which hurts more than it
   helps (measured on the simulator); every pair is in one round per sweep, so shared round noise stays
   independent across a node's partners and the median over partners absorbs it;
4. per (pair, rail) the best of its sizes and rounds (a retest: a degraded path cannot run faster than it is;
   a heavy-tailed dip of one size or a transient of one round can), then the median over rails (a single bad
   rail is left to the node x rail matrix).
Pairs that only ever failed get -4.6 (1% of the fleet): a failed pair is evidence, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fabricbench.analyze.fleet import ClassStats, class_stats

FAILED_VALUE = float(np.log(0.01))
CLASS_NAMES = ["inter-node", "intra-leaf", "inter-leaf"]


@dataclass
class PairData:
    names: list[str]
    Y: np.ndarray  # n x n float32, NaN = not measured
    support: np.ndarray  # n x n int16: independent values behind each cell (sizes x rails)
    worst: np.ndarray | None  # n x n: worst round (for intermittent dips), None when every pair ran once
    failed: dict[tuple[int, int], str]
    stats: dict[tuple[int, int], ClassStats]
    sizes: list[int]
    all_sizes: list[int]
    rails: list[int]
    leaf_idx: np.ndarray | None
    nic_of: dict[tuple[str, int], str]
    rail_cells: pd.DataFrame | None  # host, rail, value (median normalized log), count
    duplicates: int
    rows_used: int
    notes: list[str] = field(default_factory=list)
    # every used row (normalized log bandwidth, sender, receiver, round): the data's own tail and rounds
    row_y: np.ndarray | None = None
    row_src: np.ndarray | None = None
    row_dst: np.ndarray | None = None
    row_round: np.ndarray | None = None
    row_size: np.ndarray | None = None  # index into `sizes` (int16: millions of rows)
    failed_rounds: dict[tuple[int, int], set] = field(default_factory=dict)
    invalid: int = 0  # rows marked ok whose bandwidth was 0, negative or infinite
    # rounds of a retest (stage 1): selected by what the sweep found, so they confirm a suspect on their own
    retest_rounds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def node_codes(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    src, dst = pairs["src"], pairs["dst"]
    if isinstance(src.dtype, pd.CategoricalDtype) and isinstance(dst.dtype, pd.CategoricalDtype) and \
            src.cat.categories.equals(dst.cat.categories):
        names = [str(x) for x in src.cat.categories]
        return src.cat.codes.to_numpy().astype(np.int32), dst.cat.codes.to_numpy().astype(np.int32), names
    both = pd.concat([src.astype(str), dst.astype(str)], ignore_index=True)
    codes, uniq = pd.factorize(both)
    n = len(src)
    return codes[:n].astype(np.int32), codes[n:].astype(np.int32), [str(x) for x in uniq]


def _nanmedian_cols(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from fabricbench.analyze.pairfit import _nanmedian_axis

    return _nanmedian_axis(m, axis=0)


def _group_median(key: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = pd.Series(values).groupby(key)
    med = s.median()
    cnt = s.count()
    return med.index.to_numpy(), med.to_numpy(), cnt.reindex(med.index).to_numpy()


def build(pairs: pd.DataFrame, leaf_of: dict[str, str] | None, floor: float, round_correction: bool = False,
          oversubscription: float | None = None) -> PairData:
    src, dst, names = node_codes(pairs)
    n = len(names)
    bw = pairs["bw"].to_numpy(dtype=np.float32)
    is_ok = (pairs["status"] == "ok").to_numpy(dtype=bool)
    ok = is_ok & np.isfinite(bw) & (bw > 0) & (src != dst)
    sizes_all = pairs["size"].to_numpy(dtype=np.int64)
    notes: list[str] = []
    N = len(bw)
    step = max(1, N // 400_000)  # robust statistics on a strided sample: exact enough, far cheaper
    uniq_sizes = np.unique(sizes_all[::step])
    probe = np.searchsorted(uniq_sizes, sizes_all).clip(0, len(uniq_sizes) - 1)
    if len(uniq_sizes) == 0 or (uniq_sizes[probe] != sizes_all).any():  # a size the sample missed
        uniq_sizes = np.unique(sizes_all)
    del probe
    size_pos = np.searchsorted(uniq_sizes, sizes_all).astype(np.int16)
    # bandwidth sizes
    bw_sizes: list[int] = []
    if ok.any():
        ok_s, pos_s, bw_s = ok[::step], size_pos[::step], bw[::step]
        per_size = {}
        for k, sz in enumerate(uniq_sizes):
            sel = ok_s & (pos_s == k)
            if not sel.any():
                sel = ok & (size_pos == k)
                vals = bw[sel]
            else:
                vals = bw_s[sel]
            if vals.size:
                per_size[int(sz)] = float(np.median(vals))
        best = max(per_size.values())
        bw_sizes = sorted(sz for sz, v in per_size.items() if v >= 0.5 * best)
        dropped = sorted(sz for sz in per_size if sz not in bw_sizes)
        if dropped:
            notes.append(f"pair sizes below half the best bandwidth ({len(dropped)} sizes up to {max(dropped)} B) "
                         "measure latency, not bandwidth: left out of localization")
    lookup = np.full(len(uniq_sizes), -1, dtype=np.int16)
    for i, sz in enumerate(bw_sizes):
        lookup[int(np.searchsorted(uniq_sizes, sz))] = i
    size_idx_all = lookup[size_pos]
    del size_pos
    use = ok & (size_idx_all >= 0)
    # classes
    if leaf_of:
        leaf_arr = [leaf_of.get(name) for name in names]
        uniq = sorted({x for x in leaf_arr if x is not None})
        leaf_codes = {x: i for i, x in enumerate(uniq)}
        leaf_idx = np.array([leaf_codes.get(x, -1) if x is not None else -1 for x in leaf_arr], dtype=np.int32)
        ls, ld = leaf_idx[src], leaf_idx[dst]
        cls = np.where((ls < 0) | (ld < 0), 0, np.where(ls == ld, 1, 2)).astype(np.int8)
        del ls, ld
    else:
        cls = np.zeros(len(src), dtype=np.int8)
        leaf_idx = None
    all_used = bool(use.all())
    pick = (lambda x: x) if all_used else (lambda x: x[use])
    size_u = pick(size_idx_all)
    del size_idx_all
    logs = np.log(pick(bw))
    contended = None
    if oversubscription and oversubscription > 1.0 and leaf_idx is not None and use.any():
        # judge each measurement against what it could reach in its round (contention.py)
        from fabricbench.analyze.contention import round_loads

        share, load_u, load_d = round_loads(
            pick(src), pick(dst), pick(pairs["round"].to_numpy(dtype=np.int64)), size_u, leaf_idx, oversubscription,
            phase=pick(pairs["phase"].to_numpy(dtype=np.int64)) if "phase" in pairs else None)
        logs = logs - share
        contended = share < 0
        if (share < 0).any():
            notes.append(f"oversubscribed uplinks ({oversubscription:g}:1): {int((share < 0).sum())} cross-leaf "
                         "measurement(s) judged against their fair share of the uplinks in their round")
    stats, y = class_stats(logs, pick(cls), size_u, np.asarray(bw_sizes, dtype=np.int64), CLASS_NAMES,
                           floor, step=step)
    if contended is not None and contended.any():
        from fabricbench.analyze.contention import calibrate_loads

        y, groups = calibrate_loads(y, size_u, load_u, load_d, leaf_idx[pick(src)], leaf_idx[pick(dst)])
        if groups:
            notes.append(f"what each uplink load really yields read from the fleet ({groups} load group(s) of "
                         "cross-leaf measurements): collisions under static routing are judged, not blamed")
    if contended is not None and contended.any():
        # a measurement held to its share of a shared uplink cannot show a host or path that is slow but still
        # faster than that share: where the same path also ran uncontended, only those readings judge it
        key = pick(src).astype(np.int64) * n + pick(dst)
        unc = np.bincount(key[~contended], minlength=n * n) > 0
        y = y.astype(np.float32, copy=True)
        y[contended & unc[key]] = np.nan
    del cls
    s_u, d_u = pick(src), pick(dst)
    rnd = pick(pairs["round"].to_numpy(dtype=np.int64)) if round_correction else None
    rail_all = pairs["rail"].to_numpy()
    rail_used = pick(rail_all)
    present = np.bincount(rail_used.astype(np.int64) + 1) if use.any() else np.zeros(0, np.int64)
    rails = [int(r) - 1 for r in np.flatnonzero(present)]
    if len(rails) > 1:
        rail_u = np.searchsorted(np.asarray(rails, dtype=np.int64), rail_used).astype(np.int32)
    else:
        rail_u = np.zeros(1, np.int32)  # broadcast: one rail
    del rail_used, present
    # round correction
    if round_correction and use.any() and len(np.unique(rnd)) > 1:
        key = (rnd - rnd.min()) * (len(bw_sizes) + 1) + size_u
        ukey, inv = np.unique(key, return_inverse=True)
        cnt = np.bincount(inv)
        med = pd.Series(y).groupby(inv).median().to_numpy()
        big = cnt >= 8
        center = float(np.median(med[big])) if big.any() else 0.0
        shift = np.where(big[inv], med[inv] - center, 0.0)
        y = y - shift
    nS, nR = max(len(bw_sizes), 1), max(len(rails), 1)
    duplicates = 0
    worst = None
    Y = np.full((n, n), np.nan, dtype=np.float32)
    support = np.zeros((n, n), dtype=np.int16)
    if use.any():
        # best over sizes and rounds per (rail, pair): one dip of one size or one round is noise or a transient
        wide = np.int64 if nR * n * n >= 2**31 else np.int32
        flat = (rail_u.astype(wide) * n + s_u.astype(wide, copy=False)) * n + d_u.astype(wide, copy=False)
        y32 = y.astype(np.float32)
        # best of rounds per size (a degraded path cannot run faster than it is), then the median over sizes: a
        # small size that bursts above line rate (shaper buckets, timer granularity) or dips is outvoted, and a
        # fault of the path shows at every size
        if nS > 1:
            cube_s = np.full(nS * nR * n * n, -np.inf, dtype=np.float32)
            np.fmax.at(cube_s, size_u.astype(flat.dtype) * (nR * n * n) + flat, y32)
            cube_s[~np.isfinite(cube_s)] = np.nan
            cube, _c = _nanmedian_cols(cube_s.reshape(nS, nR * n * n))
            cube = cube.astype(np.float32)
            del cube_s, _c
        else:
            cube = np.full(nR * n * n, -np.inf, dtype=np.float32)
            np.fmax.at(cube, flat, y32)
        counts = np.bincount(flat, minlength=nR * n * n)
        if counts.max() > nS:
            key = flat.astype(np.int64) * nS + size_u
            duplicates = int(len(key) - len(np.unique(key)))
            worst_cube = np.full(nR * n * n, np.inf, dtype=np.float32)
            np.fmin.at(worst_cube, flat, y32)
            worst_cube[~np.isfinite(worst_cube)] = np.nan
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                worst = np.nanmin(worst_cube.reshape(nR, n, n), axis=0)
            del worst_cube
        cube[~np.isfinite(cube)] = np.nan
        if nR == 1:
            Y = cube.reshape(n, n)
            support = np.minimum(counts, 32000).astype(np.int16).reshape(n, n)
        else:
            from fabricbench.analyze.pairfit import _nanmedian_axis

            med, _cnt = _nanmedian_axis(cube.reshape(nR, n * n), axis=0)
            Y = med.astype(np.float32).reshape(n, n)
            support = np.minimum(counts.reshape(nR, n * n).sum(axis=0), 32000).astype(np.int16).reshape(n, n)
        del cube, counts
    # failed pairs
    failed: dict[tuple[int, int], str] = {}
    failed_rounds: dict[tuple[int, int], set] = {}
    # a reading of 0 GB/s or less, or an infinite one, is a dead direction or a broken input: evidence, not a row
    # to drop (NaN bandwidth with a latency is a ping-pong row)
    lat_col = pairs["latency_us"].to_numpy(dtype=np.float64)
    invalid = is_ok & (src != dst) & ((np.isfinite(bw) & (bw <= 0)) | np.isinf(bw)
                                      | (np.isnan(bw) & ~np.isfinite(lat_col)))
    bad = (~is_ok | invalid) & (src != dst) & (src >= 0) & (dst >= 0)
    if bad.any():
        err = pairs["error"].astype(object).to_numpy()[bad]
        bwb = bw[bad]
        rb = pairs["round"].to_numpy(dtype=np.int64)[bad]
        for a, b, e, v, r in zip(src[bad], dst[bad], err, bwb, rb):
            if np.isfinite(v) and v <= 0:
                e = f"read {float(v):g} GB/s (a dead direction or a broken input)"
            elif np.isinf(v):
                e = "read an infinite bandwidth (a broken input)"
            failed.setdefault((int(a), int(b)), str(e) if e is not None and e == e else "failed")
            failed_rounds.setdefault((int(a), int(b)), set()).add(int(r))
        for (a, b) in failed:
            if not np.isfinite(Y[a, b]):
                Y[a, b] = FAILED_VALUE
                support[a, b] = max(int(support[a, b]), 1)
    # node x rail cells
    rail_cells = None
    nic_of: dict[tuple[str, int], str] = {}
    if len(rails) >= 2 and use.any():
        hosts = np.concatenate([s_u, d_u])
        rr = np.concatenate([np.broadcast_to(rail_u, s_u.shape), np.broadcast_to(rail_u, s_u.shape)])
        vals = np.concatenate([y, y])
        key = hosts * len(rails) + rr
        k, med, cnt = _group_median(key, vals)
        rail_cells = pd.DataFrame({"host": [names[int(x) // len(rails)] for x in k],
                                   "rail": [rails[int(x) % len(rails)] for x in k], "value": med, "count": cnt})
        nic_col = pairs["nic"].astype(object).to_numpy()
        sub = pd.DataFrame({"h": src[use], "r": rail_all[use], "nic": nic_col[use]}).dropna().drop_duplicates(["h", "r"])
        for h, r, nic in sub.itertuples(index=False):
            nic_of[(names[int(h)], int(r))] = str(nic)
    return PairData(names=names, Y=Y, support=support, worst=worst, failed=failed, stats=stats, sizes=bw_sizes,
                    all_sizes=sorted(int(s) for s in np.unique(sizes_all)) if len(sizes_all) else [],
                    rails=rails, leaf_idx=leaf_idx, nic_of=nic_of, rail_cells=rail_cells, duplicates=duplicates,
                    rows_used=int(use.sum()), notes=notes, row_y=y, row_src=s_u, row_dst=d_u,
                    row_round=pick(pairs["round"].to_numpy(dtype=np.int32)), failed_rounds=failed_rounds,
                    row_size=size_u.astype(np.int16, copy=False) if len(bw_sizes) else None,
                    invalid=int(invalid.sum()), retest_rounds=_retest_rounds(pairs))


def _retest_rounds(pairs: pd.DataFrame) -> np.ndarray:
    if "stage" not in pairs or not len(pairs):
        return np.zeros(0, dtype=np.int64)
    stage = pairs["stage"].to_numpy()
    return np.unique(pairs["round"].to_numpy(dtype=np.int64)[stage == 1])
