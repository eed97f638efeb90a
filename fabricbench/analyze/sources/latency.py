"""Evidence from latency: the ClusterKit rule (a pair is bad above 2.1x the fleet's minimum) localized with the
directed min-model on -log(latency), per size and only from that size (a ping-pong of 16 MiB never stands in
for a missing 8 B row).

Uses ping-pong rows (bandwidth empty, latency given) when present, otherwise the latency column of the smallest
size. The fleet "minimum" is its 5th percentile. A host is named only from the median over its partners; one slow
pair reading is listed for a retest, never a verdict (a single slow reading is what noise and OS jitter do)."""

from __future__ import annotations

import math

import numpy as np

from fabricbench.analyze import pairfit
from fabricbench.analyze.evidence import Context, Evidence, source
from fabricbench.analyze.pairdata import node_codes

NAME = "latency"


@source(NAME, order=20)
def latency(ctx: Context) -> list[Evidence]:
    pairs = ctx.dataset.pairs
    if not len(pairs):
        return []
    th = ctx.thresholds
    lat = pairs["latency_us"].to_numpy(dtype=np.float64)
    ok = np.isfinite(lat) & (lat > 0) & (pairs["status"] == "ok").to_numpy(dtype=bool)
    if ok.sum() < 3:
        return []
    bw = pairs["bw"].to_numpy(dtype=np.float64)
    sizes = pairs["size"].to_numpy()
    pingpong = ok & ~np.isfinite(bw)
    use = pingpong if pingpong.any() else ok & (sizes == sizes[ok].min())
    src, dst, names = node_codes(pairs)
    n = len(names)
    if n < 3:
        return []
    leaf_of = ctx.fabric.leaf_of if ctx.fabric is not None and ctx.fabric.leaf_of else ctx.dataset.leaf_of
    leaf = None
    if leaf_of and all(h in leaf_of for h in names):
        ln = sorted(set(leaf_of[h] for h in names))
        if len(ln) >= 2:
            leaf = np.array([ln.index(leaf_of[h]) for h in names])
    out: list[Evidence] = []
    for size in sorted(set(sizes[use].tolist())):
        sel = use & (sizes == size) & (src != dst)
        s, d, v = src[sel], dst[sel], np.log(lat[sel])
        if v.size < 3:
            continue
        M = np.full(n * n, np.inf)
        np.fmin.at(M, s.astype(np.int64) * n + d, v)  # best of repeats of this size
        M[~np.isfinite(M)] = np.nan
        M = M.reshape(n, n)
        fin = M[np.isfinite(M)]
        if fin.size < 3:
            continue
        med = float(np.median(fin))
        low = float(np.quantile(fin, 0.05))
        fit = pairfit.fit((-(M - med)).astype(np.float32), leaf, explain=math.log(1.5) / 2, floor=max(th.min_spread, 0.02))
        thr = max(math.log(th.latency_factor) - (med - low), math.log(1.25))
        ctx.compared(f"latency {size} B", "fleet", f"median {math.exp(med):.2f} us over {fin.size} pairs")
        ctx.res.notes.append(f"latency at {size} B: fleet median {math.exp(med):.2f} us, 5th percentile "
                             f"{math.exp(low):.2f} us over {v.size} measurement(s) "
                             f"({'ping-pong rows' if pingpong.any() else 'smallest size'})")
        for i, host in enumerate(names):
            dd = -min(fit.send[i], fit.recv[i])
            m = int(min(fit.send_n[i], fit.recv_n[i]) or max(fit.send_n[i], fit.recv_n[i]))
            if dd <= thr or m < 3 or dd < th.component_sigmas * fit.spread * 1.2533 / math.sqrt(m):
                continue
            ratio = math.exp(dd + med - low)
            out.append(Evidence(
                source=NAME, component=host, kind="nic", deficit=1 - math.exp(-dd), support=m, noise=fit.spread,
                basis="fleet", threshold=1 - math.exp(-thr), severity="major" if ratio > 4 else "minor",
                summary=f"{host}: latency {math.exp(dd):.1f}x the fleet median at {size} B ({ratio:.1f}x its minimum; "
                        f"ClusterKit rule {th.latency_factor:g}x) to {m} partners: its NIC, port, or a host that is "
                        "slow to respond",
                details=[f"{size} B: median latency term over {m} partners; fleet median {math.exp(med):.2f} us, "
                         f"5th percentile {math.exp(low):.2f} us"],
                retest=[f"ping-pong {host} with two healthy hosts"], identifiers={"host": host}, hosts=[host],
                own_host=host))
        ok_end = (fit.send > -thr / 2) & (fit.recv > -thr / 2)
        with np.errstate(invalid="ignore"):
            flag = (fit.residual < -max(thr, 5 * fit.spread)) & ok_end[:, None] & ok_end[None, :]
        for i, j in list(zip(*np.nonzero(flag)))[:20]:
            r = float(-fit.residual[i, j])
            out.append(Evidence(source=NAME, component=f"{names[i]}->{names[j]}", kind="link", deficit=0.0, support=1,
                                noise=fit.spread, pattern="retest",
                                summary=f"one latency reading {math.exp(r):.1f}x what its ends explain at {size} B: "
                                        f"ping-pong {names[i]} {names[j]} again",
                                hosts=[names[i], names[j]]))
    return out
