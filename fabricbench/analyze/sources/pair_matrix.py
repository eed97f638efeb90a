"""Evidence from pairwise bandwidth: host send/receive sides, leaf switches, leaf uplinks, single paths, failed
pairs and intermittent NICs, from the directed min-model fit (pairfit) of the pair matrix (pairdata).

Every judgement uses the noise the data shows: the fit's residual spread (1.4826 x MAD) for terms that are
medians over many partners, and the empirical tail of single measurements (how often one reading falls this far
below what its ends explain) for single paths, where tens of thousands of paths are tested at once.
"""

from __future__ import annotations

import math

import numpy as np

from fabricbench.analyze import flapping, pairdata, pairfit, pathtest, tomography
from fabricbench.analyze.evidence import Context, Evidence, source
from fabricbench.analyze.weigh import FALSE_ALARM_BUDGET
from fabricbench.analyze.verdicts import pct

NAME = "pair-matrix"
DEAD = float(np.log(0.02))  # at or below 2% of the fleet: a failed or zero reading (failed = 1%, shifted by the fit)


def _leaf_map(ctx: Context) -> tuple[dict[str, str] | None, str]:
    """host -> leaf from --topology, else from the results themselves (sweeps and the simulator record it)."""
    if ctx.fabric is not None and ctx.fabric.leaf_of:
        return ctx.fabric.leaf_of, "topology"
    if ctx.dataset.leaf_of:
        return ctx.dataset.leaf_of, "results"
    return None, ""


def _retest_partners(exclude: set[int], names: list[str], healthy: np.ndarray, leaf: np.ndarray | None,
                     k: int = 3) -> list[str]:
    """Healthy partners on different leaves, never one of `exclude` (never a host with itself)."""
    out: list[str] = []
    seen: set[int] = set()
    for j in np.flatnonzero(healthy):
        if int(j) in exclude:
            continue
        lj = int(leaf[j]) if leaf is not None else -1
        if leaf is not None and lj in seen and len(seen) < 3:
            continue
        seen.add(lj)
        out.append(names[j])
        if len(out) >= k:
            break
    return out


@source(NAME, order=10)
def pair_matrix(ctx: Context) -> list[Evidence]:
    ds, th, res = ctx.dataset, ctx.thresholds, ctx.res
    if not len(ds.pairs):
        return []
    leaf_of, leaf_src = _leaf_map(ctx)
    over = ctx.fabric.oversubscription if ctx.fabric is not None else None
    recorded = ds.extra.get("uplink_oversubscription") or []
    if over is None and recorded:  # no topology given: the uplink limits the sweep itself recorded
        over = max(recorded)
        res.notes.append(f"uplinks {over:g}:1 oversubscribed, as the sweep's fabric map recorded them")
    pd_ = pairdata.build(ds.pairs, leaf_of, th.min_spread, oversubscription=over)
    res.notes.extend(pd_.notes)
    names = pd_.names
    n = len(names)
    res.hosts = sorted(set(res.hosts) | set(names))
    res.fleet.extend(s.as_dict() for s in pd_.stats.values())
    res.counts.update({"pair_rows": int(len(ds.pairs)), "pair_rows_used": pd_.rows_used, "nodes": n,
                       "directed_pairs_measured": int(np.isfinite(pd_.Y).sum())})
    if pd_.invalid:
        res.caveats.append(f"{pd_.invalid} pair row(s) marked ok read 0, negative or infinite bandwidth: counted as "
                           "failed measurements (a dead direction or a broken input), not dropped")
    if pd_.duplicates:
        res.notes.append(f"{pd_.duplicates} repeated pair measurement(s) (same pair, size, rail in several rounds): "
                         "the best of each is used (a degraded path cannot run faster than it is)")
    measured = np.isfinite(pd_.Y)
    failed_cells = len([1 for (a, b) in pd_.failed if pd_.Y[a, b] <= DEAD])
    ok_cells = int(measured.sum()) - failed_cells
    if measured.sum() and ok_cells <= 0.5 * measured.sum():
        res.cluster.append({"what": "pair measurements", "basis": "data", "failed": True,
                            "summary": f"{failed_cells} of {int(measured.sum())} measured directed pairs failed or read "
                                       "0/invalid bandwidth: nothing healthy to compare with; the fabric (or the "
                                       "benchmark's setup) is broken"})
        ctx.compared("pair bandwidth", "data", "most pairs failed")
        return []
    if n < 3:
        res.inconclusive.append(f"pair measurements cover {n} node(s): at least 3 are needed to tell a node from "
                                "its partner")
        ctx.compared("pair bandwidth", "topology" if ctx.fabric is not None and ctx.fabric.expected else "nothing",
                     "fewer than 3 nodes: no fleet")
        return []
    ctx.compared("pair bandwidth", "fleet", "robust median per path class and size")
    if pd_.failed:
        res.caveats.append(f"{len(pd_.failed)} directed pair(s) failed to measure: each counts as 1% of the fleet "
                           "(evidence against its ends or path); a pair that failed once with healthy ends is listed "
                           "for a retest, one that failed in several rounds is a verdict")
    coverage = measured.sum() / (n * (n - 1))
    if coverage < 0.999:
        res.notes.append(f"pair coverage {100 * coverage:.1f}% of the {n * (n - 1)} directed pairs "
                         "(a random-K or partial sweep, or missing measurements)")
    leaf = None
    leaf_names: list[str] = []
    if leaf_of:
        leaf_names = sorted({leaf_of[h] for h in names if h in leaf_of})
        if all(h in leaf_of for h in names) and len(leaf_names) >= 2:
            li = {x: i for i, x in enumerate(leaf_names)}
            leaf = np.array([li[leaf_of[h]] for h in names], dtype=np.int64)
            if leaf_src == "results":
                res.notes.append("leaf of each host taken from the results (no --topology)")
        else:
            missing = [h for h in names if h not in leaf_of]
            if missing:
                res.caveats.append(f"{len(missing)} measured host(s) have no known leaf (e.g. {missing[0]}): "
                                   "uplink tomography is off")
    if pd_.leaf_idx is not None:
        li_ = pd_.leaf_idx
        cls = np.where((li_[:, None] < 0) | (li_[None, :] < 0), 0,
                       np.where(li_[:, None] == li_[None, :], 1, 2)).astype(np.int8)
    else:
        cls = np.zeros(pd_.Y.shape, dtype=np.int8)
    fit = pairfit.fit(pd_.Y, leaf, explain=th.explain, floor=th.min_spread, cls=cls)
    # "healthy enough to explain others" must be judged against the noise of a median over partners: in a small
    # or noisy fleet a healthy host's term wanders beyond a fixed 4%, and it would be dropped as a reference
    explain = max(th.explain, 2.0 * fit.spread * 1.2533 / math.sqrt(max(n - 1, 1)))
    if explain > th.explain * 1.01:
        fit = pairfit.fit(pd_.Y, leaf, explain=explain, floor=th.min_spread, cls=cls)
    ctx.shared["explain"] = explain
    if leaf is not None and len(leaf_names) == 2:
        res.notes.append("two leaves: every cross-leaf path uses both leaves' uplinks, so an uplink fault is "
                         "indistinguishable from the inter-leaf level itself; judge that level with --topology "
                         "(expectation) or --baseline")
    pd_.Y = fit.residual + fit.predicted
    np.fill_diagonal(pd_.Y, np.nan)
    for row in res.fleet:
        c = pairdata.CLASS_NAMES.index(row["class"])
        stats = pd_.stats.get((c, row["size"]))
        if stats is not None and c < len(fit.offsets):
            row["healthy_gbps"] = stats.ref_gbps * math.exp(float(fit.offsets[c]))
            row["compared_with"] = "fleet"
    levels = {r["class"]: r["healthy_gbps"] for r in res.fleet
              if "healthy_gbps" in r and pd_.sizes and r["size"] == max(pd_.sizes)}
    if "intra-leaf" in levels and "inter-leaf" in levels and levels["intra-leaf"] > 0:
        res.counts["inter_over_intra_leaf"] = round(levels["inter-leaf"] / levels["intra-leaf"], 3)
    rel = th.rel
    thr_frac = 1 - th.fleet_fraction
    spread = fit.spread
    res.counts["pair_spread_pct"] = round(100 * spread, 3)
    ctx.shared["pairs"] = {"data": pd_, "fit": fit, "leaf": leaf, "leaf_names": leaf_names, "cls": cls}
    out: list[Evidence] = []
    # --- host sides -------------------------------------------------------------------------------------
    nic_names: dict[str, set] = {}
    if ds.pairs["nic"].notna().any():
        sub = ds.pairs[["src", "nic"]].dropna().drop_duplicates()
        for h, nic in sub.itertuples(index=False):
            nic_names.setdefault(str(h), set()).add(str(nic))
    bad_node = np.zeros(n, dtype=bool)
    node_ev: dict[int, Evidence] = {}
    # Where concurrent flows can slow each other (oversubscribed uplinks, several spines under ECMP), cross-leaf
    # paths carry the schedule's collisions and can hide a host that is slower than its share. A host's own
    # fault shows on every path, including those inside its leaf that share no uplink: judge the host on its
    # intra-leaf partners when it has at least 3 of them. On oversubscribed leaves always (a host slower than
    # its share of the uplinks is masked on cross-leaf paths); with several spines and no oversubscription only
    # where the data shows collisions, cross-leaf residuals spreading wider than intra-leaf ones (a non-blocking
    # fabric with adaptive routing has none: there a host keeps all its partners, not the ~15 of its leaf).
    send_t, recv_t = fit.send.copy(), fit.recv.copy()
    send_m, recv_m = fit.send_n.copy(), fit.recv_n.copy()
    several_spines = ctx.fabric is not None and ctx.fabric.collisions_possible()
    resid_of = np.zeros(n, dtype=np.int8)  # which fit's residuals are a host's null: 0 all partners, 1 intra-leaf
    # a host's null: the values of pairs nothing explains (no bad end, no short uplink), as measured: the
    # fit's residuals are not, since each had its ends' small terms taken out (a shift that a median over a
    # hundred partners turns into p-values ten times too small)
    with np.errstate(invalid="ignore"):
        pools = [np.where(fit.predicted > -explain, pd_.Y, np.nan)]
    measured = [np.isfinite(pd_.Y)]
    if leaf is not None and ((over or 1.0) > 1.0 or several_spines and _collisions_seen(fit.residual, leaf)):
        same = leaf[:, None] == leaf[None, :]
        Yi = np.where(same, pd_.Y, np.nan).astype(np.float32)
        if np.isfinite(Yi).sum() >= 3:
            fi = pairfit.fit(Yi, None, explain=explain, floor=th.min_spread)
            enough = (np.isfinite(Yi).sum(axis=1) >= 3) & (np.isfinite(Yi).sum(axis=0) >= 3)
            send_t = np.where(enough, fi.send, send_t)
            recv_t = np.where(enough, fi.recv, recv_t)
            send_m = np.where(enough, fi.send_n, send_m)
            recv_m = np.where(enough, fi.recv_n, recv_m)
            resid_of = enough.astype(np.int8)
            with np.errstate(invalid="ignore"):
                pools.append(np.where(fi.predicted > -explain, Yi, np.nan))
            measured.append(np.isfinite(Yi))
            if enough.any():
                spread = max(spread, fi.spread) if not enough.all() else fi.spread
                res.notes.append("concurrent flows can collide on this fabric (oversubscription or several spines): "
                                 "hosts judged on their intra-leaf partners, which share no uplink")
    # a host term is the median of its partners: how often that many draws of the pairs nothing explains have a
    # median this low is the data's own answer (heavy tails and few partners included), times the host sides
    # tested; partners inside a leaf and across leaves scatter differently, so a host's null mixes its partners'
    # classes as it has them
    host_null = HostNull(pools, measured, cls)
    sides = 2 * n
    # where host terms scatter wider than independent partners would (partners sharing something the data does
    # not name), the whole fleet shows it: the sides at p <= 5% against the 5% expected widen every host's chance
    side_p = [host_null.median_p(i, float(t[i]), int(mm[i]), int(resid_of[i]), side)
              for i in range(n) for t, mm, side in ((send_t, send_m, "send"), (recv_t, recv_m, "recv")) if mm[i] >= 3]
    inflation = max(1.0, sum(p <= 0.05 for p in side_p) / (0.05 * len(side_p))) if len(side_p) >= 100 else 1.0
    if inflation > 1.5:
        res.notes.append(f"host terms scatter wider than independent partners give ({sum(p <= 0.05 for p in side_p)} "
                         f"of {len(side_p)} host sides at p <= 5%): each host's chance is taken {inflation:.1f}x larger")
    for i, host in enumerate(names):
        ds_, dr = -send_t[i], -recv_t[i]
        res.node_levels[host] = {"send": float(send_t[i]), "recv": float(recv_t[i]),
                                 "send_n": int(send_m[i]), "recv_n": int(recv_m[i])}
        d = max(ds_, dr)
        m_s, m_r = int(send_m[i]), int(recv_m[i])
        se_s = spread * 1.2533 / math.sqrt(max(m_s, 1))
        se_r = spread * 1.2533 / math.sqrt(max(m_r, 1))
        # the weaker side counts when it is itself clearly below healthy (beyond the fleet rule or 3 standard
        # errors of its own median), not only when it crosses the rule: noise splits a both-ways fault unevenly
        weak_s = ds_ > rel or (ds_ > rel / 2 and ds_ > 3 * se_s)
        weak_r = dr > rel or (dr > rel / 2 and dr > 3 * se_r)
        both = weak_s and weak_r
        m = int(min(m_s, m_r) if both else (m_s if ds_ >= dr else m_r))
        se = spread * 1.2533 / math.sqrt(max(m, 1))
        # beyond the fleet rule and beyond what the median of m noisy partners can wander by chance
        if d <= rel or d < th.component_sigmas * se or m < 3:
            continue
        host_chance = sides * inflation * host_null.median_p(i, -d, m, int(resid_of[i]),
                                                              "send" if ds_ >= dr else "recv")
        bad_node[i] = True
        row = pd_.Y[i][np.isfinite(pd_.Y[i])]
        col = pd_.Y[:, i][np.isfinite(pd_.Y[:, i])]
        dead_tx = row.size and np.all(row <= DEAD)
        dead_rx = col.size and np.all(col <= DEAD)
        direction = "both" if both else ("tx" if ds_ >= dr else "rx")
        if both:
            where = f"sends at {100 - pct(-ds_):.0f}% and receives at {100 - pct(-dr):.0f}% of the fleet"
        elif direction == "tx":
            where = f"sends at {100 - pct(-ds_):.0f}% of the fleet (receives normally): the transmit side"
        else:
            where = f"receives at {100 - pct(-dr):.0f}% of the fleet (sends normally): the receive side"
        nics = sorted(nic_names.get(host, []))
        summary = (f"{host} {where} across {m} partners: its NIC, cable or leaf port"
                   + (" (or the host's PCIe path to it; per-NIC data would separate them)" if len(nics) <= 1 else ""))
        fact = False
        if dead_tx and dead_rx:
            summary, fact = f"every measurement involving {host} failed or read 0: the host or its network attachment is down", True
        elif dead_tx or dead_rx:
            summary, fact = (f"every measurement {host} {'sent' if dead_tx else 'received'} failed or read 0 GB/s "
                             f"across {m} partners: a dead {'transmit' if dead_tx else 'receive'} direction"), True
        ident = {"host": host}
        if nics:
            ident["nic"] = ", ".join(nics)
        row_failed = [names[j] for (a, j) in pd_.failed if a == i][:5]
        worst = np.argsort(np.nan_to_num(pd_.Y[i], nan=0.0))[:3]
        ev = Evidence(
            source=NAME, component=host, kind="nic", deficit=1 - math.exp(-d), support=m, noise=spread,
            basis="fleet", threshold=thr_frac, direction=direction, fact=fact, confidence=0.95 if fact else None,
            severity="critical" if fact else None, summary=summary, chance=None if fact else host_chance,
            details=[f"send term {pct(send_t[i]):.1f}% below fleet ({m_s} partners), receive term "
                     f"{pct(recv_t[i]):.1f}% ({m_r} partners); noise (residual spread) {100 * spread:.1f}%; "
                     f"{host_chance:.2g} host sides expected this low by chance among {sides}"]
            + ([f"failed pairs with {', '.join(row_failed)}"] if row_failed else []),
            measurements=[{"pair": f"{host}->{names[j]}", "below_fleet_pct": round(pct(float(pd_.Y[i, j])), 1)}
                          for j in worst if np.isfinite(pd_.Y[i, j])],
            identifiers=ident, hosts=[host], own_host=host)
        node_ev[i] = ev
    healthy = ~bad_node
    for i, ev in node_ev.items():
        ev.retest = [f"{names[i]}<->{p}" for p in _retest_partners({i}, names, healthy, leaf)]
    group_ev: list[Evidence] = []
    if leaf is None and bad_node.sum() >= 3:
        node_ev, group_ev = _hidden_groups(node_ev, pd_.Y, names, rel)
    if leaf is not None:
        node_ev, group_ev = _leaf_switches(node_ev, leaf, leaf_names, names)
    out += list(node_ev.values()) + group_ev
    switched = {e.component for e in group_ev if e.kind == "switch"}
    # --- leaf uplinks (tomography) --------------------------------------------------------------------------
    bad_up: list[int] = []
    if leaf is not None and fit.up is not None:
        ups, bad_up = _uplinks(ctx, pd_, fit, leaf, leaf_names, names, healthy, switched)
        out += ups
    ctx.shared["pairs"]["bad_up"] = bad_up
    _unexplained_levels(res, pd_, leaf, bad_up, bad_node, cls)
    # --- single paths, failed pairs, intermittent hosts -------------------------------------------------------
    flaps = _intermittent(ctx, pd_, names, healthy, bad_node, leaf, bad_up)
    out += flaps
    for e in flaps:  # a flapping host explains its own paths' dips: they are not links of their own
        healthy[names.index(e.component)] = False
    out += _paths(ctx, pd_, fit, leaf, names, healthy, bad_up)
    if pd_.rail_cells is not None:
        from fabricbench.analyze.evidence import from_verdict
        from fabricbench.analyze.matrices import node_rail

        vs, mat = node_rail(pd_.rail_cells, leaf_of, pd_.nic_of, rel, spread, th.explain)
        out += [from_verdict(v, "node-rail") for v in vs]
        res.rail_matrix = mat
    step = max(1, math.ceil(n / 256))  # reports show a downsampled matrix; the analysis used all of it
    res.pair_matrix = {"names": names[::step], "values": np.where(np.isfinite(pd_.Y[::step, ::step]),
                                                                  pd_.Y[::step, ::step], np.nan).tolist(),
                       "step": step, "n": n}
    return out


class HostNull:
    """What a host term would read by chance: the pairs nothing explains, per class of path. A host's side is
    the median over its partners; each partner draws from its own class, so the chance of one partner this low
    is the mix of the classes over the partners the host has (a binomial on the mean chance is, if anything,
    conservative against the exact mixed count)."""

    def __init__(self, pools: list[np.ndarray], measured: list[np.ndarray], cls: np.ndarray):
        self.measured = measured
        self.cls = cls
        self.nulls: dict[tuple[int, int], pathtest.Null] = {}
        for k, r in enumerate(pools):
            ok = np.isfinite(r)
            for c in np.unique(cls[ok]):
                vals = r[ok & (cls == c)]
                if vals.size >= 30:
                    self.nulls[(k, int(c))] = pathtest.Null(vals)
            self.nulls[(k, -1)] = pathtest.Null(r[ok])

    def median_p(self, i: int, x: float, m: int, pool: int, side: str) -> float:
        # the host's own partners, by class (its row is not in the pool when its term explains it)
        have = self.measured[pool][i] if side == "send" else self.measured[pool][:, i]
        classes = self.cls[i] if side == "send" else self.cls[:, i]
        counts = np.bincount(classes[have].astype(np.int64), minlength=3)
        if counts.sum() == 0:
            return 1.0
        q = sum(int(nc) * self.nulls.get((pool, c), self.nulls[(pool, -1)]).cdf(x)
                for c, nc in enumerate(counts) if nc) / float(counts.sum())
        return pathtest.binom_sf(math.ceil(m / 2), m, q)


def _hidden_groups(node_ev: dict[int, Evidence], Y: np.ndarray, names: list[str], rel: float):
    """Without any leaf map: slow hosts that are healthy among themselves share a path (a leaf's uplinks)."""
    idx = list(node_ev)
    parent = {i: i for i in idx}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in idx:
        for b in idx:
            if a < b and np.isfinite(Y[a, b]) and np.isfinite(Y[b, a]) and Y[a, b] > -rel and Y[b, a] > -rel:
                parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in idx:
        groups.setdefault(find(i), []).append(i)
    out_nodes = dict(node_ev)
    extra = []
    for g in groups.values():
        if len(g) < 3:
            continue
        members = [names[i] for i in g]
        evs = [node_ev[i] for i in g]
        for i in g:
            out_nodes.pop(i, None)
        d = float(np.median([e.deficit for e in evs]))
        extra.append(Evidence(
            source=NAME, component="uplink shared by " + ",".join(members[:8]) + ("..." if len(members) > 8 else ""),
            kind="uplink", deficit=d, support=max(2, int(math.sqrt(sum(e.support for e in evs)))),
            noise=evs[0].noise, basis="fleet", threshold=evs[0].threshold, cap=0.85, hosts=members,
            summary=f"{len(members)} hosts read {100 * d:.0f}% low to everyone else but normal among themselves: "
                    "they share a path, most likely their leaf switch's uplinks (give --topology to name it)",
            details=[f"{e.component}: {100 * e.deficit:.0f}% below fleet" for e in evs][:8],
            retest=[f"{members[0]}<->{members[1]} (should be healthy)"], identifiers={"hosts": members}))
    return out_nodes, extra


def _leaf_switches(node_ev: dict[int, Evidence], leaf: np.ndarray, leaf_names: list[str], names: list[str]):
    """Most of a leaf's hosts bad together, in both directions: the leaf switch, not each host."""
    out_nodes = dict(node_ev)
    extra = []
    for k, lname in enumerate(leaf_names):
        members = [i for i in np.flatnonzero(leaf == k)]
        badm = [i for i in members if i in node_ev]
        if len(members) >= 2 and len(badm) >= max(2, math.ceil(0.75 * len(members))):
            evs = [node_ev[i] for i in badm]
            for i in badm:
                out_nodes.pop(i)
            extra.append(Evidence(
                source=NAME, component=lname, kind="switch", deficit=float(np.median([e.deficit for e in evs])),
                support=len(badm), noise=evs[0].noise, basis="fleet", threshold=evs[0].threshold, cap=0.95,
                summary=f"{len(badm)} of {len(members)} hosts on {lname} read low to every partner: the leaf "
                        "switch itself (or its power/firmware), not each host",
                details=[f"{e.component}: {100 * e.deficit:.0f}% below fleet" for e in evs][:8],
                retest=[f"{names[badm[0]]}<->{names[badm[1]]} (same leaf)"], identifiers={"switch": lname},
                hosts=[names[i] for i in badm]))
    return out_nodes, extra


def _uplinks(ctx, pd_, fit, leaf, leaf_names, names, healthy, switched):
    th = ctx.thresholds
    rel, spread = th.rel, fit.spread
    ok_src = fit.send > -ctx.shared["explain"]
    ok_dst = fit.recv > -ctx.shared["explain"]
    ev = {(e.leaf, e.direction): e for e in tomography.link_evidence(pd_.Y, leaf, ok_src, ok_dst, rel)}
    ident_ok = tomography.identifiable(leaf)
    spines = ctx.fabric.spines if ctx.fabric is not None else []
    # every leaf's aggregate cross-leaf traffic against the other leaves' under the same schedule (each
    # measurement already judged against its round's fair share): where collisions spread single paths widely,
    # the per-path terms below cannot separate a short uplink from them, the leaf's aggregate can
    terms = None
    if ident_ok and pd_.row_y is not None and len(pd_.row_y):
        # ends: hosts not judged faulty (on this fabric judged on their intra-leaf partners); not the fit's host
        # terms, which absorb a short uplink the per-path fit missed into its own hosts' terms and would leave
        # out exactly the leaf's most affected hosts
        ends = healthy[pd_.row_src] & healthy[pd_.row_dst]
        terms = tomography.leaf_terms(pd_.row_y, pd_.row_src, pd_.row_dst, leaf, ends)
    out, bad_up = [], []
    for k, lname in enumerate(leaf_names):
        if lname in switched:
            continue
        du, dd = -fit.up[k], -fit.down[k]
        d = max(du, dd)
        m = int(min(fit.up_n[k], fit.down_n[k]) if du > rel and dd > rel else (fit.up_n[k] if du >= dd else fit.down_n[k]))
        m_eff = max(2, int(math.sqrt(max(m, 1))))  # independent evidence is per host and partner leaf, not per path
        if d <= rel or d < th.component_sigmas * spread * 1.2533 / math.sqrt(m_eff):
            agg = _leaf_aggregate(ctx, terms, k, lname, leaf, names, healthy, spines, ident_ok)
            if agg is not None:
                bad_up.append(k)
                out.append(agg)
            continue
        e = ev[(k, "up" if du >= dd else "down")]
        dirs = "both directions" if du > rel and dd > rel else ("toward the spines" if du > dd else "from the spines")
        members = [names[i] for i in np.flatnonzero(leaf == k)]
        others = [names[i] for i in np.flatnonzero((leaf != k) & healthy)]
        inside = [h for h in members if healthy[names.index(h)]]
        summary = (f"{lname}'s uplinks ({dirs}): cross-leaf paths through them read {pct(-d):.0f}% low while "
                   f"{lname}'s hosts are healthy among themselves and other leaves are healthy")
        cap = 0.99
        if not ident_ok:
            cap = 0.5
            summary += "; with only two leaves an uplink cannot be told from the other leaf's (not identifiable)"
        if len(spines) > 1:
            summary += f"; traffic spreads over {len(spines)} spines (ECMP/adaptive routing), so which spine port is uncertain"
        bad_up.append(k)
        out.append(Evidence(
            source=NAME, component=f"{lname} uplink" + (f" ({lname}-{spines[0]})" if len(spines) == 1 else "s"),
            kind="uplink", deficit=1 - math.exp(-d), support=m_eff, noise=spread, basis="fleet",
            threshold=1 - th.fleet_fraction, direction="both" if dirs == "both directions" else ("up" if du > dd else "down"),
            cap=cap, summary=summary,
            details=[f"tomography: {e.bad_on} of {e.paths_on} measured paths through it are bad, "
                     f"{e.bad_off} of {e.paths_off} cross-leaf paths elsewhere",
                     f"up term {pct(fit.up[k]):.1f}%, down term {pct(fit.down[k]):.1f}% below fleet"],
            retest=[f"{a}<->{b}" for a, b in zip(inside[:2], others[:2])],
            identifiers={"switch": lname, "spines": spines}, hosts=members))
    return out, bad_up


def _leaf_aggregate(ctx, terms, k, lname, leaf, names, healthy, spines, ident_ok) -> Evidence | None:
    """Leaf k's uplinks judged on its aggregate cross-leaf traffic against the other leaves' (tomography.leaf_terms):
    beyond the fleet rule and beyond component_sigmas x the noise the leaves themselves show (the term's
    standard error and the other leaves' scatter). `chance`: the leaf terms tested (leaves x 2 directions) times
    the t tail at that margin, with the other leaves' count - 1 degrees of freedom (their scatter is part of the
    noise; a term itself is a mean of hundreds of measurements)."""
    if terms is None:
        return None
    th = ctx.thresholds
    rel = th.rel
    got = {}
    for direction in ("up", "down"):
        d, sigma, n_k = terms.judge(k, direction)
        if d > rel and math.isfinite(sigma) and d >= th.component_sigmas * sigma:
            got[direction] = (d, sigma, n_k)
    if not got:
        return None
    direction = max(got, key=lambda x: got[x][0])
    d, sigma, n_k = got[direction]
    z = d / max(sigma, 1e-9)
    tests = 2 * int(np.isfinite(terms.up).sum())
    # the noise includes the other leaves' scatter, estimated from few leaves: read the margin on a t tail
    chance = tests * tomography.student_t_sf(z, terms.scatter_dof(k, direction))
    both = len(got) == 2
    dirs = "both directions" if both else ("toward the spines" if direction == "up" else "from the spines")
    members = [names[i] for i in np.flatnonzero(leaf == k)]
    inside = [h for h in members if healthy[names.index(h)]]
    others = [names[i] for i in np.flatnonzero((leaf != k) & healthy)]
    rows = int(terms.rows[0 if direction == "up" else 1][k])
    summary = (f"{lname}'s uplinks ({dirs}): {lname}'s cross-leaf traffic reads {pct(-d):.0f}% below the other "
               f"leaves' under the same schedule ({rows} measurements to and from {n_k} other leaves, each judged "
               f"against its round's fair share), while {lname}'s hosts are healthy")
    if not ident_ok:
        summary += "; with only two leaves an uplink cannot be told from the other leaf's (not identifiable)"
    if len(spines) > 1:
        summary += f"; traffic spreads over {len(spines)} spines (ECMP/adaptive routing), so which spine port is uncertain"
    details = [f"leaf aggregate: {lname} {'up' if direction == 'up' else 'down'} term {pct(-d):.1f}% below the median "
               f"leaf, noise {100 * sigma:.1f}% (its standard error and the other leaves' scatter): "
               f"{z:.1f} sigma; {chance:.2g} such leaf terms expected by chance among {tests}"]
    for x, (dx, sx, _n) in got.items():
        if x != direction:
            details.append(f"{x} term {pct(-dx):.1f}% below the median leaf ({dx / max(sx, 1e-9):.1f} sigma)")
    return Evidence(
        source=NAME, component=f"{lname} uplink" + (f" ({lname}-{spines[0]})" if len(spines) == 1 else "s"),
        kind="uplink", deficit=1 - math.exp(-d), support=max(n_k, 1), noise=sigma * math.sqrt(max(n_k, 1)) / 1.2533,
        basis="fleet", threshold=1 - th.fleet_fraction, direction="both" if both else direction, chance=chance,
        cap=0.99 if ident_ok else 0.5, summary=summary, details=details,
        retest=[f"{a}<->{b}" for a, b in zip(inside[:2], others[:2])],
        identifiers={"switch": lname, "spines": spines}, hosts=members)


def _unexplained_levels(res, pd_, leaf, bad_up, bad_node, cls) -> None:
    """Per class, the fleet level of the paths no component verdict explains (a fleet-wide shortfall must not
    count the paths a degraded uplink or host already explains)."""
    Y = pd_.Y
    explained = bad_node[:, None] | bad_node[None, :]
    if leaf is not None and bad_up:
        badl = np.isin(leaf, bad_up)
        explained = explained | ((leaf[:, None] != leaf[None, :]) & (badl[:, None] | badl[None, :]))
    if pd_.row_y is None or not len(pd_.row_y) or pd_.row_size is None:
        return
    rc = cls[pd_.row_src, pd_.row_dst]
    rkeep = ~explained[pd_.row_src, pd_.row_dst]
    for row in res.fleet:
        c = pairdata.CLASS_NAMES.index(row["class"])
        if int(row["size"]) not in pd_.sizes:
            continue
        sel = (rc == c) & (pd_.row_size == pd_.sizes.index(int(row["size"])))
        keep = sel & rkeep
        if sel.sum() and keep.sum() >= 3 and (sel & ~rkeep).any():
            # row_y is log(bw / this class and size's median): the median of the paths nothing explains
            row["unexplained_median_gbps"] = row["median_gbps"] * math.exp(float(np.nanmedian(pd_.row_y[keep])))


COLLISION_SPREAD = 1.25  # cross-leaf residuals this much wider than intra-leaf ones: collisions show


def _collisions_seen(residual: np.ndarray, leaf: np.ndarray) -> bool:
    """Do cross-leaf paths scatter more than intra-leaf ones (robust spreads of the fit's residuals)? Where a
    leaf has too few intra-leaf paths to say, assume they do (the cautious side: judge hosts inside their leaf)."""
    same = leaf[:, None] == leaf[None, :]
    intra, cross = residual[same], residual[~same]
    intra, cross = intra[np.isfinite(intra)], cross[np.isfinite(cross)]
    if intra.size < 30 or cross.size < 30:
        return True

    def spread(x: np.ndarray) -> float:
        return 1.4826 * float(np.median(np.abs(x - np.median(x))))

    return spread(cross) > COLLISION_SPREAD * max(spread(intra), 1e-4)


def _round_corunners(pd_) -> dict[int, int]:
    """A signature of the set of paths scheduled in each round (the smallest hash of its paths: a MinHash over
    the rows of one size and the pairs that failed in it, so that a transient failure does not change the
    round's schedule): two rounds with the same co-runners have the same signature."""
    if pd_.row_round is None or not len(pd_.row_round) or pd_.row_size is None:
        return {}
    one = pd_.row_size == pd_.row_size.max()
    s, d, r = pd_.row_src[one].astype(np.uint64), pd_.row_dst[one].astype(np.uint64), pd_.row_round[one]
    failed = [(a, b, x) for (a, b), rounds in pd_.failed_rounds.items() for x in rounds]
    if failed:
        fa, fb, fr = (np.array(col) for col in zip(*failed))
        s = np.concatenate([s, fa.astype(np.uint64)])
        d = np.concatenate([d, fb.astype(np.uint64)])
        r = np.concatenate([r.astype(np.int64), fr.astype(np.int64)])
    h = (s * np.uint64(0x9E3779B97F4A7C15) + d * np.uint64(0xC2B2AE3D27D4EB4F)) ^ (s << np.uint64(32)) ^ d
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    ur, inv = np.unique(r, return_inverse=True)
    sig = np.full(len(ur), np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(sig, inv, h)
    return {int(x): int(v) for x, v in zip(ur, sig)}


def _paths(ctx, pd_, fit, leaf, names, healthy, bad_up) -> list[Evidence]:
    """A single path slow beyond its ends (pathtest.py): each path's (path, round) units against its class's
    pooled units, at least a majority of them (and two) low; times the paths tested, the expected number of such
    paths if nothing were wrong (`chance`). Rounds that repeat the same co-runners (a repeated schedule: the same
    collisions under static routing) count once. Paths that read low but not beyond chance are listed for a
    retest (more rounds of the same path are what separates them from the noise)."""
    th = ctx.thresholds
    rel, spread = th.rel, fit.spread
    R = fit.residual
    n = len(names)
    out: list[Evidence] = []
    cls_m = ctx.shared["pairs"]["cls"]
    explain = ctx.shared["explain"]
    ends_ok = ((fit.send > -explain) & healthy)[:, None] & ((fit.recv > -explain) & healthy)[None, :]
    tested = max(int((np.isfinite(R) & ends_ok).sum()), 1)
    if pd_.row_y is None or not len(pd_.row_y) or pd_.row_round is None:
        return out + _failed_pairs(pd_, names, healthy, tested, spread)
    # the null classes: inside a leaf, across leaves, and cross-leaf paths through a leaf whose uplink is short
    # (their readings spread with it)
    null_cls = cls_m.astype(np.int64)
    if bad_up and leaf is not None:
        cross = leaf[:, None] != leaf[None, :]
        for k in bad_up:
            null_cls = np.where(cross & ((leaf[:, None] == k) | (leaf[None, :] == k)), 3 + k, null_cls)
    s, d = pd_.row_src, pd_.row_dst
    off = fit.offsets[cls_m[s, d]] if len(fit.offsets) else 0.0
    pred = fit.predicted[s, d]
    resid = np.where(ends_ok[s, d] & np.isfinite(pred), pd_.row_y - off - pred, np.nan).astype(np.float32)
    del off, pred
    # where concurrent flows can collide, a cross-leaf path's rounds that ran with the same co-runners may repeat
    # one collision: they count once if the data says they do (their readings correlate), else each is a unit
    upath, uval, utag = pathtest.path_units(resid, s, d, pd_.row_round, n, with_tags=True)
    if ctx.fabric is None or ctx.fabric.collisions_possible():
        corunners = _round_corunners(pd_)
        collapse = np.ones(n * n, dtype=bool) if leaf is None else (leaf[:, None] != leaf[None, :]).reshape(-1)
        rho, npairs = pathtest.repeat_correlation(upath, utag, uval, corunners, collapse)
        if npairs and (npairs < 50 or rho >= 0.2):
            upath, uval, utag = pathtest.path_units(resid, s, d, pd_.row_round, n, corunners, collapse,
                                                    with_tags=True)
            why = (f"{npairs} repeated path readings depend at {rho:.2f}: collisions recur with the schedule"
                   if npairs >= 50 else f"{npairs} repeated path readings are too few to tell whether collisions "
                   "recur")
            ctx.res.notes.append(f"a path's rounds with the same co-runners count once ({why})")
        elif npairs:
            ctx.res.notes.append(f"repeated rounds judged as independent ({npairs} path readings with the same "
                                 f"co-runners depend at {rho:.2f}, low readings included: collisions do not recur)")
    if not len(upath):
        return out + _failed_pairs(pd_, names, healthy, tested, spread)
    nulls = _class_nulls(upath, uval, null_cls)
    # screen: the path's median unit below the fleet rule and a standard error of its class's units (the rest
    # cannot reach significance; those that do not are the retest list)
    paths, first, counts, med, order = pathtest.group_medians(upath, uval)
    up_s, uv_s, ut_s = upath[order], uval[order], utag[order]
    spread_of = np.full(int(null_cls.max()) + 1, np.nan)
    for c, nl in nulls.items():
        spread_of[c] = nl.spread
    sig_c = spread_of[null_cls.reshape(-1)[paths]]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = med / (np.maximum(sig_c, 1e-3) / np.sqrt(counts))
    cand = np.flatnonzero((med < -rel) & (z < -1.0))
    if len(cand) > 2000:
        ctx.res.caveats.append(f"{len(cand)} directed pairs read low beyond their ends' terms; the 2000 worst are judged")
        cand = cand[np.argsort(z[cand])[:2000]]
    units_of = {int(paths[c]): uv_s[first[c]:first[c] + counts[c]] for c in cand}
    tags_of = {int(paths[c]): ut_s[first[c]:first[c] + counts[c]] for c in cand}
    # a path the sweep read low and a retest ran again is judged on its retest rounds alone, among the paths
    # retested (its sweep rounds are why it was chosen: counting them again would confirm the selection)
    retested = pathtest.retest_units(upath, uval, utag, pd_.retest_rounds)
    for pid, (vals, tags) in retested.items():
        if pid in units_of or float(np.median(vals)) < -rel:
            units_of[pid], tags_of[pid] = vals, tags

    # with a retest a path may be blamed by either family of tests (sweep, retest): Bonferroni over both keeps
    # the source within its false-alarm budget
    families = 2 if retested else 1
    confirmed = 0  # retested paths blamed on their retest rounds
    _resolution(ctx.res, th, nulls, null_cls.reshape(-1), paths, counts, tested, families, retested)

    def among_paths(pid: int) -> int:  # how many paths a path's test is one of
        return len(retested) if pid in retested else tested
    rounds_of: dict[int, set] = {}
    if units_of:
        want = np.isin(s.astype(np.int64) * n + d, np.fromiter(units_of, dtype=np.int64))
        for a, b, r in zip(s[want].tolist(), d[want].tolist(), pd_.row_round[want].tolist()):
            rounds_of.setdefault(a * n + b, set()).add(int(r))
    done: set = set()
    suspects: list[dict] = []
    by_round = None
    if leaf is not None and pd_.row_round is not None:
        order_r = np.argsort(pd_.row_round, kind="stable")
        ur, first_r = np.unique(pd_.row_round[order_r], return_index=True)
        by_round = (order_r, {int(x): (int(a), int(b)) for x, a, b in zip(ur, first_r, np.r_[first_r[1:], len(order_r)])})
    for p in sorted(units_of, key=lambda x: float(np.median(units_of[x]))):
        i, j = divmod(p, n)
        if p in done or (i, j) in pd_.failed and pd_.Y[i, j] <= DEAD:
            continue
        # one verdict for a pair slow both ways only when each direction is beyond chance on its own (a reverse
        # direction that merely reads a little low would dilute a one-way fault)
        both = (j * n + i) in units_of and (j * n + i) not in done and all(
            among_paths(x) * families * pathtest.scan_p(units_of[x], nulls[int(null_cls[i, j])])[0]
            <= FALSE_ALARM_BUDGET
            for x in (p, j * n + i))
        done |= {p, j * n + i} if both else {p}
        units = pathtest.both_ways(units_of[p], tags_of[p], units_of[j * n + i], tags_of[j * n + i]) if both \
            else units_of[p]
        null = nulls[int(null_cls[i, j])]
        p_val, agree = pathtest.scan_p(units, null)
        among = max(among_paths(p), among_paths(j * n + i) if both else 0)
        chance = among * families * p_val
        on_retest = p in retested
        k = len(units)
        dpt = float(-np.median(units))
        rounds = rounds_of.get(p, set()) | (rounds_of.get(j * n + i, set()) if both else set())
        a, b = names[i], names[j]
        comp = f"{a}<->{b}" if both else f"{a}->{b}"
        if k < 2 and chance <= 1.0:  # one round: a transient or a recurring collision looks alike
            out.append(Evidence(
                source=NAME, component=comp, kind="link", deficit=1 - math.exp(-dpt), support=1,
                noise=float(null.spread), basis="fleet", threshold=1 - math.exp(-rel), chance=chance, confidence=1.0,
                cap=0.45, summary=(f"the path {a} {'<->' if both else '->'} {b} reads {pct(-dpt):.0f}% below what its "
                                   "ends explain, measured in one round only (or rounds repeating the same "
                                   "co-runners): a transient or a recurring collision looks the same, retest to "
                                   "confirm"),
                details=[f"p = {p_val:.2g} against {len(null.values)} units of its class; {among} paths "
                         + ("retested" if on_retest else "tested")],
                retest=[f"{a}->{b} (twice, in different rounds)"], identifiers={"hosts": [a, b]}, hosts=[a, b]))
        # and its level itself beyond the noise: its median over rounds, in standard errors of its class's units
        z_path = dpt / (max(float(null.spread), 1e-3) / math.sqrt(k))
        if k < 2 or chance > FALSE_ALARM_BUDGET or z_path < th.pair_sigmas:
            suspects.append({"path": comp, "src": a, "dst": b, "both": both, "deficit": 1 - math.exp(-dpt),
                             "collided": bool(leaf is not None and dpt > 3 * float(null.spread)
                                              and _collided(i, j, dpt, rounds_of.get(p, set()), leaf, s, d,
                                                            pd_.row_round, resid, by_round)),
                             "units": k, "chance": chance, "retested": on_retest})
            continue
        partner = _retest_partners({i, j}, names, healthy, leaf, 1)
        confirmed += on_retest
        rounds_said = f"{agree} of its {k} retest rounds this low after the sweep read it low" if on_retest \
            else f"{agree} of its {k} independent rounds this low"
        summary = (f"the path {a} {'<->' if both else '->'} {b} reads {pct(-dpt):.0f}% below what its ends explain "
                   f"({a} and {b} are healthy with other partners), {rounds_said}: cables, ports or the route "
                   "between them")
        out.append(Evidence(
            source=NAME, component=comp, kind="link", deficit=1 - math.exp(-dpt), support=k,
            noise=float(null.spread), basis="fleet", threshold=1 - math.exp(-rel), chance=chance, confidence=1.0,
            cap=0.97, summary=summary,
            details=[f"{a}->{b}: {pct(float(pd_.Y[i, j])):.1f}% below fleet in {len(rounds)} round(s), "
                     + (f"{k} of them its retest's, judged alone (the sweep's are why it was retested)" if on_retest
                        else f"{k} independent (rounds repeating the same co-runners count once)"),
                     f"{agree} of {k} {'retest ' if on_retest else ''}units at or below the path's level; "
                     f"p = {p_val:.2g} against {len(null.values)} units of its class; {among} paths "
                     f"{'retested' if on_retest else 'tested'}"
                     + (" (x2: the sweep's and the retest's tests)" if families > 1 else "")
                     + f": {chance:.2g} such paths expected by chance"]
            + ([f"{b}->{a}: {pct(float(pd_.Y[j, i])):.1f}% below fleet"] if np.isfinite(pd_.Y[j, i]) else []),
            measurements=[{"pair": f"{a}->{b}", "below_fleet_pct": round(pct(float(pd_.Y[i, j])), 1)}],
            retest=[f"{a}->{b} (twice, in different rounds)"] + ([f"{a}->{partner[0]}"] if partner else []),
            identifiers={"hosts": [a, b]}, hosts=[a, b]))
    if retested:
        ctx.res.notes.append(f"{len(retested)} directed path(s) the sweep read low ran again in its retest and were "
                             f"judged on those rounds alone: {confirmed} verdict(s), the rest read within the noise "
                             "there (cleared)")
    # the retest list: paths low alone first; a path that was low together with another flow out of its source
    # leaf or into its destination leaf, about as low, in each of its rounds is most likely a collision (and
    # last, the paths a retest already ran without confirming them)
    suspects.sort(key=lambda x: (x["retested"], x["collided"], x["chance"]))
    ctx.res.suspect_paths = suspects[:200]
    for sp in suspects[:10]:
        if sp["chance"] > 1.0 or sp["retested"]:
            break
        out.append(Evidence(
            source=NAME, component=sp["path"], kind="link", deficit=sp["deficit"], support=sp["units"],
            noise=spread, basis="fleet", threshold=1 - math.exp(-rel), pattern="retest",
            summary=(f"reads {100 * sp['deficit']:.0f}% below what its ends explain in {sp['units']} independent "
                     f"round(s), within what chance gives among {tested} paths ({sp['chance']:.2g} expected): "
                     f"retest {sp['src']}->{sp['dst']} in 3 more rounds"),
            identifiers={"hosts": [sp["src"], sp["dst"]]}, hosts=[sp["src"], sp["dst"]]))
    return out + _failed_pairs(pd_, names, healthy, tested, spread)


def _resolution(res, th, nulls, null_of: np.ndarray, paths: np.ndarray, counts: np.ndarray, tested: int,
                families: int, retested: dict) -> None:
    """How low one path alone must read to be blamed, per class of path, from the rounds a path has and the
    noise of its class: what the operator needs to know of a pass (a single-path fault shallower than this was
    not looked for in vain, it was beyond the data) and what more rounds would buy."""
    found = []
    path_cls = null_of[paths]
    for c in (1, 2, 0):  # intra-leaf, inter-leaf, inter-node (no leaves known)
        mine = counts[path_cls == c]
        if not mine.size or c not in nulls:
            continue
        k = int(np.median(mine))
        depth = pathtest.resolvable_depth(nulls[c], k, tested * families, FALSE_ALARM_BUDGET, th.pair_sigmas)
        more = pathtest.resolvable_depth(nulls[c], k + 8, tested * families, FALSE_ALARM_BUDGET, th.pair_sigmas)
        found.append({"class": pairdata.CLASS_NAMES[c], "rounds": k, "paths": tested,
                      "spread_pct": round(100 * float(nulls[c].spread), 1),
                      "resolvable_pct": round(pct(-depth), 1) if math.isfinite(depth) else None,
                      "with_8_more_rounds_pct": round(pct(-more), 1) if math.isfinite(more) else None})
    if retested:
        k = int(np.median([len(v) for v, _ in retested.values()]))
        classes = null_of[np.fromiter(retested, dtype=np.int64)]
        c = int(np.bincount(classes).argmax())  # the class most retested paths are judged in
        depth = pathtest.resolvable_depth(nulls[c], k, len(retested) * families, FALSE_ALARM_BUDGET,
                                          th.pair_sigmas)
        found.append({"class": "retested", "rounds": k, "paths": len(retested),
                      "spread_pct": round(100 * float(nulls[c].spread), 1),
                      "resolvable_pct": round(pct(-depth), 1) if math.isfinite(depth) else None})
    if not found:
        return
    res.counts["single_path_resolution"] = found

    def one(x: dict) -> str:
        at = "beyond this data" if x["resolvable_pct"] is None else f">= {x['resolvable_pct']:.0f}% below"
        return f"{x['class']} {at} ({x['rounds']} round(s) a path, {x['spread_pct']:.0f}% spread, {x['paths']} paths)"
    more = [x for x in found if x.get("with_8_more_rounds_pct") is not None]
    res.notes.append("single-path resolution: a path alone is blamed once each of its rounds reads, beyond what its "
                     "ends explain, " + "; ".join(one(x) for x in found) + ". A fault on one path alone shallower "
                     "than that is beyond this data, not cleared by it"
                     + (f" ({more[0]['rounds'] + 8} rounds a path would resolve "
                        f"{more[0]['with_8_more_rounds_pct']:.0f}%)" if more else "")
                     + ": retest the suspects (`sweep pairwise --retest --retest-rounds K`) or sweep with `--repeat`")


def _collided(i: int, j: int, depth: float, rounds: set, leaf, s, d, rnd, resid, by_round) -> bool:
    """Was path i->j, in every round it ran, low together with another cross-leaf flow out of its source leaf or
    into its destination leaf, about as deep (half to 1.5 times)? Colliding flows share one link and read alike.
    Asked only of a path low well beyond its class's noise, where a co-runner that low is not noise."""
    if by_round is None or leaf[i] == leaf[j] or not rounds:
        return False
    order, span = by_round
    for r in rounds:
        a, b = span.get(int(r), (0, 0))
        rows = order[a:b]
        rs, rd = s[rows], d[rows]
        near = ((leaf[rs] == leaf[i]) | (leaf[rd] == leaf[j])) & (leaf[rs] != leaf[rd]) & ~((rs == i) & (rd == j))
        if not np.any(near & (resid[rows] < -0.5 * depth) & (resid[rows] > -1.5 * depth)):
            return False
    return True


def _class_nulls(upath: np.ndarray, uval: np.ndarray, null_cls: np.ndarray) -> dict[int, pathtest.Null]:
    """Each null class's pooled units (the pooled units of all classes where a class has fewer than 200)."""
    ucls = null_cls.reshape(-1)[upath]
    pooled = pathtest.Null(uval)
    out: dict[int, pathtest.Null] = {}
    for c in np.unique(null_cls):
        vals = uval[ucls == c]
        out[int(c)] = pathtest.Null(vals) if vals.size >= 200 else pooled
    return out


def _failed_pairs(pd_, names, healthy, tested, spread) -> list[Evidence]:
    """Failed pairs whose ends work with others: failing in several rounds is a verdict only when the fleet's own
    failure rate cannot explain it (tested paths x rate ^ rounds failed, the pair's own failures left out)."""
    out: list[Evidence] = []
    units = fail_units = 0
    if pd_.failed and pd_.row_round is not None:
        n_ = len(names)
        rr = pd_.row_round.astype(np.int64)
        units = len(np.unique((pd_.row_src.astype(np.int64) * n_ + pd_.row_dst) * (int(rr.max() - rr.min()) + 1)
                              + (rr - rr.min()))) if len(rr) else 0
        fail_units = sum(len(v) for v in pd_.failed_rounds.values())
    for (i, j), why in pd_.failed.items():
        if not (pd_.Y[i, j] <= DEAD) or not (healthy[i] and healthy[j]):
            continue  # measured fine another time, or an end already explains it
        a, b = names[i], names[j]
        nrounds = len(pd_.failed_rounds.get((i, j), set()) | pd_.failed_rounds.get((j, i), set()))
        own = len(pd_.failed_rounds.get((i, j), ()))
        rate = (fail_units - own + 1) / (units + fail_units + 1) if units else 1.0
        fchance = tested * rate ** max(nrounds, 1)
        repeats = nrounds >= 2
        out.append(Evidence(
            source=NAME, component=f"{a}->{b}", kind="link", deficit=0.99, support=nrounds, noise=spread,
            basis="data", fact=repeats, confidence=0.95 if repeats else None, chance=fchance if repeats else None,
            pattern="steady" if repeats else "retest", severity="critical",
            summary=(f"{a}->{b} failed in {nrounds} rounds ({why[:120]}) while both ends work with others" if repeats
                     else f"failed once ({why[:100]}) while both ends work with others: retest {a}->{b}"),
            details=[f"failed in {nrounds} round(s); the fleet fails {100 * rate:.2f}% of path-rounds: "
                     f"{fchance:.2g} such paths expected by chance"], retest=[f"{a}->{b} (twice, in different rounds)"],
            identifiers={"hosts": [a, b]}, hosts=[a, b]))
    return out


def _binom_tail(k: int, m: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(m, p), bounded from above by Chernoff: exp(-m KL(k/m || p)) (no SciPy; an
    upper bound only makes the intermittent test more conservative)."""
    q = k / m
    if q <= p:
        return 1.0
    if q >= 1.0:
        return p ** m
    kl = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    return math.exp(-m * kl)


def _intermittent(ctx, pd_, names, healthy, bad_node, leaf=None, bad_up=()) -> list[Evidence]:
    """Dips in some rounds of a pair, others fine. Many dips on one host's paths, far more than the fleet's own
    dip rate explains (binomial tail, times the hosts tested), is one intermittent NIC, not many links."""
    res, th = ctx.res, ctx.thresholds
    named: set[int] = set()
    # round by round first (a host's rounds against its leaf-mates' rounds: the sharper test where rounds are
    # known; it needs no pair measured twice), then the partner count for the hosts it did not name
    out = _flapping_by_round(ctx, pd_, names, healthy, bad_node, leaf, bad_up, named)
    if pd_.worst is None:  # every pair measured once: no pair's worst round to set against its best
        return out
    rel = th.rel
    with np.errstate(invalid="ignore"):
        multi = np.isfinite(pd_.worst) & np.isfinite(pd_.Y) & (pd_.support > max(1, len(pd_.sizes)))
        dips = multi & (pd_.worst < -max(2 * rel, 3 * ctx.shared["pairs"]["fit"].spread)) & (pd_.Y > -rel)
    # independent unit: a partner (a transient often hits both directions of a pair in its round at once)
    D, Mu = dips | dips.T, multi | multi.T
    total = int(np.triu(Mu, 1).sum())
    if not total:
        return out
    p = max(float(np.triu(D, 1).sum()) / total, 1.0 / total)
    n = len(names)
    for i in range(n):
        if bad_node[i] or i in named:
            continue
        tx, rx = int(dips[i].sum()), int(dips[:, i].sum())
        k, m = int(D[i].sum()), int(Mu[i].sum())
        if k < 3 or m < 4:
            continue
        chance = n * _binom_tail(k, m, p)
        if chance > FALSE_ALARM_BUDGET:
            continue
        named.add(i)
        direction = "both" if tx >= 2 and rx >= 2 else ("tx" if tx > rx else "rx")
        depth = float(np.nanmedian(np.concatenate([pd_.worst[i][dips[i]], pd_.worst[:, i][dips[:, i]]])))
        out.append(Evidence(
            source=NAME, component=names[i], kind="nic", deficit=1 - math.exp(depth), support=k, noise=0.0,
            basis="fleet", threshold=0.0, direction=direction, pattern="intermittent", chance=chance,
            confidence=1.0, cap=0.95,
            summary=f"{names[i]} dips {pct(depth):.0f}% in some rounds with {k} of {m} partners and is normal in "
                    f"others (fleet dip rate {100 * p:.1f}%): an intermittent NIC, cable or port (flapping link)",
            details=[f"{tx} dips sending, {rx} receiving; {chance:.2g} hosts expected this bad by chance"],
            retest=[f"watch link flaps/error counters on {names[i]}; retest {names[i]} with 3 partners, 3 rounds"],
            identifiers={"host": names[i]}, hosts=[names[i]], own_host=names[i]))
    di, dj = np.nonzero(dips)
    lines = [(i, j) for i, j in zip(di.tolist(), dj.tolist()) if i not in named and j not in named]
    for i, j in lines[:50]:
        res.intermittent.append(f"{names[i]}->{names[j]}: one round {pct(float(pd_.worst[i, j])):.0f}% below "
                                "fleet, its other round(s) normal (transient: retest if it recurs)")
    if len(lines) > 50:
        res.intermittent.append(f"... and {len(lines) - 50} more")
    return out


def _flapping_by_round(ctx, pd_, names, healthy, bad_node, leaf, bad_up, named: set) -> list[Evidence]:
    """Hosts low with many more partners, round by round, than their leaf-mates (flapping.py); adds to `named`.
    Measurements a steady verdict already explains (a slow host's, cross-leaf paths through a slow uplink) are
    left out: their partners' rounds are low because of it, not because of the partners."""
    if pd_.row_y is None or pd_.row_round is None or not len(pd_.row_y):
        return []
    fit = ctx.shared["pairs"]["fit"]
    s, d = pd_.row_src, pd_.row_dst
    off = fit.offsets[ctx.shared["pairs"]["cls"][s, d]] if len(fit.offsets) else 0.0
    resid = pd_.row_y - off - fit.predicted[s, d]
    ok = np.isfinite(resid) & ~bad_node[s] & ~bad_node[d]
    if leaf is not None and len(bad_up):
        badl = np.isin(leaf, list(bad_up))
        ok &= ~((leaf[s] != leaf[d]) & (badl[s] | badl[d]))
    if ok.sum() < 20:
        return []
    skip = bad_node | ~healthy
    skip[list(named)] = True
    found = flapping.flapping_hosts_iter(s[ok], d[ok], pd_.row_round[ok], resid[ok], len(names), leaf, skip,
                                         FALSE_ALARM_BUDGET, floor=ctx.thresholds.rel,
                                         collisions=ctx.fabric is None or ctx.fabric.collisions_possible())
    out: list[Evidence] = []
    for h in found:
        i = h["host"]
        named.add(i)
        peers = "its leaf-mates" if leaf is not None else "the other hosts"
        out.append(Evidence(
            source=NAME, component=names[i], kind="nic", deficit=1 - math.exp(h["depth"]), support=h["k"],
            noise=h["sigma"], basis="fleet", threshold=0.0, pattern="intermittent", chance=h["chance"],
            confidence=1.0, cap=0.95,
            summary=f"{names[i]} reads low (median {pct(h['depth']):.0f}% below what its ends explain) in "
                    f"{h['rounds']} rounds with {h['partners']} different partners ({h['k']} of its {h['m']} "
                    f"{h['unit']}s low, {peers} {100 * h['others']:.0f}% of theirs): an intermittent NIC, cable or "
                    "port (flapping link)",
            details=[f"low = a (host, round) median residual below {pct(h['thr']):.1f}% ({h['sigmas']:g} x the "
                     f"rounds' own spread {100 * h['sigma']:.1f}%, at least the fleet rule); "
                     + ("a partner counts once however many of its rounds are low; " if h["unit"] == "partner" else "")
                     + f"Fisher's exact test against {peers}: "
                     f"{h['chance']:.2g} hosts expected this bad by chance"],
            retest=[f"watch link flaps/error counters on {names[i]}; retest {names[i]} with 3 partners, 3 rounds"],
            identifiers={"host": names[i]}, hosts=[names[i]], own_host=names[i]))
    return out
