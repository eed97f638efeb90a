"""Latency: the ClusterKit rule (a pair is bad when its latency exceeds 2.1x the fleet's minimum) localized with
the same directed min-model as bandwidth, on -log(latency) so that slower is negative.

Uses ping-pong rows (direction `pingpong`) when present, otherwise the latency column of the smallest size. The
fleet "minimum" is its 5th percentile (the single lowest reading is noise)."""

from __future__ import annotations

import math

import numpy as np

from fabricbench.analyze import pairfit
from fabricbench.analyze.pairdata import node_codes
from fabricbench.analyze.verdicts import Verdict, confidence


def latency_stage(pairs, leaf_of: dict | None, factor: float, floor: float) -> tuple[list[Verdict], list[str]]:
    lat = pairs["latency_us"].to_numpy(dtype=np.float64)
    ok = np.isfinite(lat) & (lat > 0) & (pairs["status"] == "ok").to_numpy(dtype=bool)
    if ok.sum() < 3:
        return [], []
    bw = pairs["bw"].to_numpy(dtype=np.float64)
    pingpong = ok & ~np.isfinite(bw)
    if pingpong.any():
        use = pingpong
    else:
        sizes = pairs["size"].to_numpy()
        use = ok & (sizes == sizes[ok].min())
    src, dst, names = node_codes(pairs)
    n = len(names)
    s, d, v = src[use], dst[use], np.log(lat[use])
    keep = s != d
    s, d, v = s[keep], d[keep], v[keep]
    if n < 3 or v.size < 3:
        return [], []
    M = np.full(n * n, np.inf)
    np.fmin.at(M, s.astype(np.int64) * n + d, v)  # best of repeats
    M[~np.isfinite(M)] = np.nan
    M = M.reshape(n, n)
    fin = M[np.isfinite(M)]
    med = float(np.median(fin))
    low = float(np.quantile(fin, 0.05))
    Z = -(M - med)  # slower = negative
    leaf = None
    if leaf_of and all(h in leaf_of for h in names):
        ln = sorted(set(leaf_of[h] for h in names))
        if len(ln) >= 2:
            leaf = np.array([ln.index(leaf_of[h]) for h in names])
    fit = pairfit.fit(Z.astype(np.float32), leaf, explain=math.log(1.5) / 2, floor=max(floor, 0.02))
    thr = max(math.log(factor) - (med - low), math.log(1.25))  # the 2.1x-the-minimum rule, relative to the median
    out: list[Verdict] = []
    for i, host in enumerate(names):
        dd = -min(fit.send[i], fit.recv[i])
        m = int(min(fit.send_n[i], fit.recv_n[i]) or max(fit.send_n[i], fit.recv_n[i]))
        if dd > thr and m >= 3:
            ratio = math.exp(dd + med - low)
            out.append(Verdict(
                component=host, kind="nic", severity="major" if ratio > 4 else "minor",
                confidence=confidence(dd, thr, fit.spread, m), deficit_pct=0.0,
                summary=f"{host}: latency {math.exp(dd):.1f}x the fleet median ({ratio:.1f}x its minimum; ClusterKit "
                        f"rule {factor:g}x) to {m} partners: its NIC, port, or a host that is slow to respond",
                evidence=[f"median latency term over {m} partners; fleet median {math.exp(med):.2f} us, "
                          f"5th percentile {math.exp(low):.2f} us"],
                retest=[f"ping-pong {host} with two healthy hosts"], identifiers={"host": host}, hosts=[host],
                basis="fleet"))
    ok_end = (fit.send > -thr / 2) & (fit.recv > -thr / 2)
    with np.errstate(invalid="ignore"):
        flag = (fit.residual < -max(thr, 5 * fit.spread)) & ok_end[:, None] & ok_end[None, :]
    for i, j in list(zip(*np.nonzero(flag)))[:100]:
        r = float(-fit.residual[i, j])
        out.append(Verdict(component=f"{names[i]}->{names[j]}", kind="link", severity="minor",
                           confidence=confidence(r, thr, fit.spread, 1, cap=0.6), deficit_pct=0.0,
                           summary=f"{names[i]} -> {names[j]}: latency {math.exp(r):.1f}x what its ends explain",
                           evidence=[f"latency residual x{math.exp(r):.2f}"], retest=[f"ping-pong {names[i]} {names[j]}"],
                           identifiers={"hosts": [names[i], names[j]]}, hosts=[names[i], names[j]]))
    notes = [f"latency: fleet median {math.exp(med):.2f} us, 5th percentile {math.exp(low):.2f} us over {v.size} "
             f"measurement(s) ({'ping-pong rows' if pingpong.any() else 'smallest size'})"]
    return out, notes
