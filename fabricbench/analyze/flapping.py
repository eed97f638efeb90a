"""A flapping NIC judged round by round: in how many rounds, with how many partners, does a host read low,
against its leaf-mates?

Unit: one (host, round), the median residual (measurement minus what the fit of both ends explains) of every
measurement the host took part in that round (both directions, every size), less the round's own median
residual (a round-wide drift hits every host alike). A NIC down for the round lowers every measurement of it;
a single-measurement dip moves the median little. A unit is "low" when it lies beyond the data's own per-round
noise (LOW_SIGMAS x the median over rounds of the units' robust spread: each cut is tried, and each distinct
one counted as a test; cuts the floor makes equal are one) and beyond the analyzer's relative floor.

Where flows can collide (oversubscription, several spines) a cross-leaf host's units are counted per partner: a
partner is low for the host when any of their rounds together is. A pair that is slow every time it runs (a bad
path, a collision that recurs because the schedule repeats under static routing) is one partner, not one unit
per repeat. Paths inside a leaf share no uplink: each round is its own unit, judged against the noise of
intra-leaf units alone (cross-leaf collisions make theirs far wider). Either way a named host is low with at
least MIN_PARTNERS different partners, and the median of its low units lies beyond DEPTH_SIGMAS spreads and
the fleet rule. A host that is down in some rounds has far more low units than hosts that share its leaf (same
uplinks, same collisions, same schedule), which Fisher's exact test (hypergeometric tail) says without assuming
a rate; times the hosts tested and the tests run on each (Bonferroni) it is the expected number of such hosts by
chance, held to the analyzer's false-alarm budget. A steady deficit is the fit's, not this test's (the fit's
host terms are subtracted, and measurements a steady host or uplink verdict explains are left out), and a
leaf-wide problem raises the leaf-mates' rate too.

A flapping host makes the round it shares with each partner low for that partner as well. Hosts are therefore
named one at a time, the most significant first, and every measurement involving a named host is removed before
the rest are judged again (`flapping_hosts_iter`).
"""

from __future__ import annotations

import math

import numpy as np

LOW_SIGMAS = (2.0, 3.5, 5.0)  # a (host, round) unit is low beyond one of these many robust spreads of its round's units
DEPTH_SIGMAS = 2.5  # the median of a named host's low units must lie beyond this many spreads
MIN_PARTNERS = 4  # a named host is low with at least this many different partners


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeom_tail(k: int, m: int, low_total: int, total: int) -> float:
    """P(X >= k), X the low units among m drawn from `total` units of which `low_total` are low (exact)."""
    lo, hi = max(k, 0), min(m, low_total)
    if lo > hi:
        return 0.0
    base = _log_comb(total, m)
    terms = [_log_comb(low_total, x) + _log_comb(total - low_total, m - x) - base for x in range(lo, hi + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def host_round_units(s: np.ndarray, d: np.ndarray, rnd: np.ndarray, resid: np.ndarray, n: int,
                     group: np.ndarray | None = None):
    """(host, round index, partner, value) for every host and round it measured in: median residual less the round
    median. The partner is the host's (first) partner in that round. With `group` (leaves), the round median is
    taken per class (inside a leaf, across leaves): a round's cross-leaf rows carry its collisions, which must not
    move the level its intra-leaf rows are judged from (a fixed schedule would make that bias recur)."""
    ur, rinv = np.unique(rnd, return_inverse=True)
    mkey = rinv.astype(np.int64) * 2
    if group is not None:
        mkey += (group[s] == group[d]).astype(np.int64)
    minv = np.unique(mkey, return_inverse=True)[1].ravel()
    del mkey
    r0 = (resid - _group_medians(minv, resid.astype(np.float64))[1][minv]).astype(np.float32)
    del minv
    # a fleet of thousands of hosts, several sizes: millions of units; the narrowest integers that hold them
    itype = np.int32 if n * len(ur) < 2**31 else np.int64
    key = np.concatenate([s, d]).astype(itype) * itype(len(ur)) + np.concatenate([rinv, rinv]).astype(itype)
    del rinv
    order, first, cnt, val = _sorted_groups(key, np.concatenate([r0, r0]))
    del r0
    uk = key[order[first]]
    del key
    # the unit's partner: the other end of its first row
    other = np.where(order[first] < len(s), d[order[first] % len(s)], s[order[first] % len(s)]).astype(np.int64)
    del order
    # the median of the unit's measurements: a NIC down for the round lowers all of them, a single-measurement
    # dip or one heavy-tailed reading moves it little
    med_unit = 0.5 * (val[first + (cnt - 1) // 2].astype(np.float64) + val[first + cnt // 2])
    return (uk // len(ur)).astype(np.int64), (uk % len(ur)).astype(np.int64), other, med_unit


def _sorted_groups(key: np.ndarray, val: np.ndarray):
    """(order, first, count, sorted values): rows sorted by key, then by value within a key, in one float sort
    of key + the value scaled into [0, 1) (a lexsort of millions of rows costs several times more; keys below
    2^33 leave the value 20 bits of float64: values closer than 1e-6 of their range may swap, which no median
    here notices)."""
    lo, span = float(val.min()), float(val.max() - val.min())
    sort_key = (val.astype(np.float64) - lo) * (0.999 / (span if span > 0 else 1.0))
    sort_key += key
    order = np.argsort(sort_key, kind="stable")
    del sort_key
    k = key[order]
    first = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    del k
    return order, first, np.diff(np.r_[first, len(order)]), val[order]


def _group_medians(key: np.ndarray, val: np.ndarray):
    """(keys, medians) of val grouped by key."""
    order, first, cnt, v = _sorted_groups(key, val)
    return key[order][first], 0.5 * (v[first + (cnt - 1) // 2] + v[first + cnt // 2])


def round_noise(rnd: np.ndarray, value: np.ndarray) -> float:
    """The units' own noise: median over rounds of the robust spread (1.4826 x MAD) of that round's units."""
    ur, inv = np.unique(rnd, return_inverse=True)
    if not len(ur):
        return 0.0
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(ur) + 1))
    spreads = []
    for g in range(len(ur)):
        v = value[order[bounds[g]:bounds[g + 1]]]
        if len(v) >= 4:
            spreads.append(1.4826 * float(np.median(np.abs(v - np.median(v)))))
    if spreads:
        return float(np.median(spreads))
    return 1.4826 * float(np.median(np.abs(value - np.median(value))))


def flapping_hosts(host: np.ndarray, partner: np.ndarray, value: np.ndarray, n: int, group: np.ndarray | None,
                   skip: np.ndarray, budget: float, floor: float = 0.0, sigma: float | None = None,
                   tested: int | None = None, per_partner: bool = True) -> list[dict]:
    """Hosts low in more units than the rest of their group (leaf; the fleet without one) explains, their low
    rounds deep beyond the noise and with several different partners, most significant first (one pass: see
    flapping_hosts_iter). A unit is a (host, partner) pair, low when any of their rounds is (`per_partner`:
    where a slow pair or a collision can recur whenever the schedule repeats), else a (host, round). "Low" is
    tried at each of LOW_SIGMAS (times the thresholds tried): a NIC down for a few rounds stands out deep in the
    tail, where heavy-tailed noise leaves its leaf-mates few units, better than at the shallowest cut."""
    if len(value) < 20:
        return []
    if sigma is None:
        sigma = 1.4826 * float(np.median(np.abs(value - np.median(value))))
    best: dict[int, dict] = {}
    # cuts the floor makes equal are one test, not several (a quiet fleet's cuts all sit at the fleet rule)
    cuts = sorted({max(floor, x * sigma): x for x in LOW_SIGMAS}.values())
    for sigmas in cuts:
        for h in _flapping_at(host, partner, value, n, group, skip, budget * len(cuts), floor, sigma,
                              sigmas, tested, per_partner):
            h["chance"] *= len(cuts)
            if h["chance"] <= budget and (h["host"] not in best or h["chance"] < best[h["host"]]["chance"]):
                best[h["host"]] = h
    return sorted(best.values(), key=lambda h: h["chance"])


def _flapping_at(host, partner, value, n, group, skip, budget, floor, sigma, sigmas, tested, per_partner):
    """flapping_hosts with "low" at `sigmas` robust spreads (and the floor)."""
    thr = -max(floor, sigmas * sigma)
    low = value <= thr
    if per_partner:
        pk = host * n + partner
        upk, pinv = np.unique(pk, return_inverse=True)
        ulow = np.zeros(len(upk), dtype=bool)
        np.logical_or.at(ulow, pinv, low)
        uhost = (upk // n).astype(np.int64)
    else:
        ulow, uhost = low, host
    upartner = (upk % n).astype(np.int64) if per_partner else partner.astype(np.int64)
    k_h = np.bincount(uhost, weights=ulow, minlength=n).astype(np.int64)
    m_h = np.bincount(uhost, minlength=n).astype(np.int64)
    grp = group if group is not None else np.zeros(n, dtype=np.int64)
    use = ~skip & (m_h >= 4)
    k_g = np.bincount(grp[use], weights=k_h[use], minlength=int(grp.max()) + 1).astype(np.int64)
    m_g = np.bincount(grp[use], weights=m_h[use], minlength=int(grp.max()) + 1).astype(np.int64)
    # the leaf-mates' units shared with the host itself: when it flaps, its partner's round with it is low too,
    # which is its evidence, not the mates' background rate
    same = use[uhost] & (grp[uhost] == grp[upartner])
    k_with = np.bincount(upartner[same], weights=ulow[same], minlength=n).astype(np.int64)
    m_with = np.bincount(upartner[same], minlength=n).astype(np.int64)
    if tested is None:
        tested = int(use.sum())
    out = []
    by_host = None  # each host's units, found once (a fleet of thousands has millions of units)
    for i in np.nonzero(use & (k_h >= 3))[0].tolist():
        k, m = int(k_h[i]), int(m_h[i])
        K, M = int(k_g[grp[i]]) - k - int(k_with[i]), int(m_g[grp[i]]) - m - int(m_with[i])  # the others in its group
        if M < 4 * m or k * M <= K * m:
            continue
        if by_host is None:
            order = np.argsort(host, kind="stable")
            by_host = (order, np.searchsorted(host[order], np.arange(n + 1)))
        mine = by_host[0][by_host[1][i]:by_host[1][i + 1]]
        mine = mine[low[mine]]
        partners = len(np.unique(partner[mine]))
        if partners < MIN_PARTNERS:
            continue
        depth = float(np.median(value[mine]))
        if depth > -max(floor, DEPTH_SIGMAS * sigma):
            continue
        chance = max(tested, 1) * hypergeom_tail(k, m, k + K, m + M)
        if chance <= budget:
            out.append(dict(host=i, k=k, m=m, rounds=len(mine), partners=partners, rate=k / m,
                            others=K / M if M else 0.0, chance=chance, depth=depth, thr=thr, sigma=sigma,
                            sigmas=sigmas, unit="partner" if per_partner else "round"))
    return out


def flapping_hosts_iter(s: np.ndarray, d: np.ndarray, rnd: np.ndarray, resid: np.ndarray, n: int,
                        group: np.ndarray | None, skip: np.ndarray, budget: float, floor: float = 0.0,
                        collisions: bool = True, max_hosts: int = 8) -> list[dict]:
    """Name flapping hosts one at a time: the most significant first, then every measurement involving it is
    removed (its partners' rounds with it were low because of it) and the rest judged again. The multiple-testing
    count stays the hosts tested at the start, times the tests run on each.

    Where concurrent flows can collide (`collisions`) and leaves are known, paths inside a leaf (their ports to
    themselves: every round independent, judged per round) and cross-leaf paths (collisions load them unevenly
    and recur for a pair whenever the schedule repeats: judged per partner, against their own, larger noise) are
    two tests, each with the noise of its own class."""
    keep = np.ones(len(resid), dtype=bool)
    named: list[dict] = []
    tested = None
    split = collisions and group is not None
    ntests = 2 if split else 1
    for _ in range(max_hosts):
        if keep.sum() < 20:
            break
        host, r_i, partner, value = host_round_units(s[keep], d[keep], rnd[keep], resid[keep], n,
                                                     group if split else None)
        if tested is None:
            m_h = np.bincount(host, minlength=n)
            tested = int((~skip & (m_h >= 4)).sum()) * ntests
        sk = skip.copy()
        sk[[h["host"] for h in named]] = True
        if split:
            intra = group[host] == group[partner]
            parts = [(intra, False), (~intra, True)]
        else:
            parts = [(np.ones(len(host), dtype=bool), collisions)]
        found = []
        for sel, per_partner in parts:
            if sel.sum() < 20:
                continue
            sigma = round_noise(r_i[sel], value[sel])
            found += flapping_hosts(host[sel], partner[sel], value[sel], n, group, sk, budget, floor, sigma,
                                    tested, per_partner)
        if not found:
            break
        best = min(found, key=lambda h: h["chance"])
        named.append(best)
        keep &= (s != best["host"]) & (d != best["host"])
    return named
