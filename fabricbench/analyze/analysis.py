"""Orchestration: measurements in, verdicts out.

`analyze(dataset, fabric=None, baseline=None, thresholds=Thresholds())` judges every measurement against the
fleet (robust median/MAD per path class and size), the optional baseline and the optional topology
expectation, localizes with the pair fit, path tomography, node x rail and GPU x GPU matrices and group tests,
and returns an `Analysis` whose `exit_code` is 0 healthy, 1 faults, 3 inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fabricbench.analyze import pairdata, pairfit, tomography
from fabricbench.analyze.groups import analyze_groups
from fabricbench.analyze.matrices import gpu_matrices, node_rail
from fabricbench.analyze.model import Dataset
from fabricbench.analyze.topo_adapter import Fabric
from fabricbench.analyze.verdicts import Verdict, confidence, pct, severity
from fabricbench.errors import UsageError

EXIT_HEALTHY, EXIT_FAULTS, EXIT_INCONCLUSIVE = 0, 1, 3


@dataclass
class Thresholds:
    """Defaults and why (docs/analyze.md): ClusterKit calls a pair bad below 93% of the best observed; we use 93%
    of the fleet's robust median (the single best reading moves with noise). SuperBench flags a drop of more than
    5% from a baseline. The topology expectation already includes achievable efficiency, so 90% of it is the
    bar. The spread floor (1%) keeps a very quiet fleet from flagging jitter."""

    fleet_fraction: float = 0.93
    baseline_drop: float = 0.05
    expected_fraction: float = 0.90
    min_spread: float = 0.01
    pair_sigmas: float = 5.0
    component_sigmas: float = 4.0
    min_confidence: float = 0.5
    nvlink_min: float = 0.03
    explain: float = 0.04
    latency_factor: float = 2.1

    @property
    def rel(self) -> float:
        return -math.log(self.fleet_fraction)

    @classmethod
    def from_dict(cls, data: dict) -> "Thresholds":
        known = {f for f in cls.__dataclass_fields__}
        bad = [k for k in data if k not in known]
        if bad:
            raise UsageError(f"unknown threshold(s) {', '.join(sorted(bad))}; known: {', '.join(sorted(known))}")
        try:
            return cls(**{k: float(v) for k, v in data.items()})
        except (TypeError, ValueError) as err:
            raise UsageError(f"thresholds: {err}") from None


@dataclass
class Analysis:
    verdicts: list[Verdict] = field(default_factory=list)
    cluster: list[dict] = field(default_factory=list)  # fleet-level findings (baseline, topology)
    caveats: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    intermittent: list[str] = field(default_factory=list)
    fleet: list[dict] = field(default_factory=list)
    expected: list[dict] = field(default_factory=list)  # measured vs expected rows
    groups: list[dict] = field(default_factory=list)
    pair_matrix: dict | None = None
    rail_matrix: dict | None = None
    gpu_mats: list[dict] = field(default_factory=list)
    node_levels: dict[str, dict] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    inconclusive: list[str] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    topology: str | None = None

    def faults(self, min_conf: float | None = None) -> list[Verdict]:
        m = self.thresholds.min_confidence if min_conf is None else min_conf
        return [v for v in self.verdicts if v.confidence >= m]

    @property
    def exit_code(self) -> int:
        if self.faults() or any(c.get("failed") for c in self.cluster):
            return EXIT_FAULTS
        if self.inconclusive or self.verdicts:
            return EXIT_INCONCLUSIVE
        return EXIT_HEALTHY

    @property
    def status(self) -> str:
        return {0: "healthy", 1: "faults", 3: "inconclusive"}[self.exit_code]


def _retest_partners(i: int, names: list[str], healthy: np.ndarray, leaf: np.ndarray | None, k: int = 3) -> list[str]:
    out: list[str] = []
    seen_leaves: set[int] = set()
    order = np.flatnonzero(healthy)
    for j in order:
        if j == i:
            continue
        lj = int(leaf[j]) if leaf is not None else -1
        if leaf is not None and lj in seen_leaves and len(seen_leaves) < 3:
            continue
        seen_leaves.add(lj)
        out.append(names[j])
        if len(out) >= k:
            break
    return out


def _hidden_groups(node_v: list[Verdict], bad_node: np.ndarray, Y: np.ndarray, names: list[str], rel: float) -> list[Verdict]:
    """Without a topology: slow hosts that are healthy among themselves share a path (a leaf's uplinks)."""
    idx = list(np.flatnonzero(bad_node))
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
    by_host = {v.component: v for v in node_v}
    out = [v for v in node_v if all(len(g) < 3 or v.component not in [names[i] for i in g] for g in groups.values())]
    for g in groups.values():
        if len(g) < 3:
            continue
        members = [names[i] for i in g]
        vs = [by_host[h] for h in members if h in by_host]
        d = float(np.median([v.deficit_pct for v in vs])) / 100
        out.append(Verdict(
            component="uplink shared by " + ",".join(members[:8]) + ("..." if len(members) > 8 else ""),
            kind="uplink", severity=severity(d), confidence=min(0.85, float(np.mean([v.confidence for v in vs]))),
            deficit_pct=100 * d, hosts=members, basis="fleet",
            summary=f"{len(members)} hosts read {100 * d:.0f}% low to everyone else but normal among themselves: "
                    "they share a path, most likely their leaf switch's uplinks (give --topology to name it)",
            evidence=[f"{v.component}: {v.deficit_pct:.0f}% below fleet" for v in vs][:8],
            retest=[f"{members[0]}<->{members[1]} (should be healthy)"], identifiers={"hosts": members}))
    return out


def _pairs_stage(ds: Dataset, fabric: Fabric | None, th: Thresholds, res: Analysis) -> None:
    pd_ = pairdata.build(ds.pairs, fabric.leaf_of if fabric else None, th.min_spread)
    res.notes.extend(pd_.notes)
    names = pd_.names
    n = len(names)
    res.hosts = sorted(set(res.hosts) | set(names))
    res.fleet.extend(s.as_dict() for s in pd_.stats.values())
    res.counts.update({"pair_rows": int(len(ds.pairs)), "pair_rows_used": pd_.rows_used, "nodes": n,
                       "directed_pairs_measured": int(np.isfinite(pd_.Y).sum())})
    if pd_.duplicates:
        res.notes.append(f"{pd_.duplicates} repeated pair measurement(s) (same pair, size, rail in several rounds): "
                         "the best of each is used (a degraded path cannot run faster than it is)")
    if n < 3:
        res.inconclusive.append(f"pair measurements cover {n} node(s): at least 3 are needed to tell a node from "
                                "its partner")
        return
    measured = np.isfinite(pd_.Y)
    coverage = measured.sum() / (n * (n - 1))
    if coverage < 0.999:
        res.notes.append(f"pair coverage {100 * coverage:.1f}% of the {n * (n - 1)} directed pairs "
                         "(a random-K or partial sweep, or missing measurements)")
    if pd_.failed:
        res.caveats.append(f"{len(pd_.failed)} directed pair(s) failed to measure; counted as 1% of the fleet "
                           "(evidence against their ends or path), listed in the verdicts")
    leaf = None
    leaf_names: list[str] = []
    if fabric and fabric.leaf_of:
        leaf_names = sorted({fabric.leaf_of[h] for h in names if h in fabric.leaf_of})
        if all(h in fabric.leaf_of for h in names) and len(leaf_names) >= 2:
            li = {x: i for i, x in enumerate(leaf_names)}
            leaf = np.array([li[fabric.leaf_of[h]] for h in names], dtype=np.int64)
        else:
            missing = [h for h in names if h not in fabric.leaf_of]
            if missing:
                res.caveats.append(f"{len(missing)} measured host(s) are not in the topology (e.g. {missing[0]}): "
                                   "uplink tomography is off")
    if pd_.leaf_idx is not None:
        li = pd_.leaf_idx
        cls = np.where((li[:, None] < 0) | (li[None, :] < 0), 0, np.where(li[:, None] == li[None, :], 1, 2)).astype(np.int8)
    else:
        cls = np.zeros(pd_.Y.shape, dtype=np.int8)
    fit = pairfit.fit(pd_.Y, leaf, explain=th.explain, floor=th.min_spread, cls=cls)
    if leaf is not None and len(leaf_names) == 2:
        res.notes.append("two leaves: every cross-leaf path uses both leaves' uplinks, so an uplink fault is "
                         "indistinguishable from the inter-leaf level itself; judge that level with --topology "
                         "(expectation) or --baseline")
    pd_.Y = fit.residual + fit.predicted  # the class-centred matrix the fit worked on
    np.fill_diagonal(pd_.Y, np.nan)
    for row in res.fleet:
        c = pairdata.CLASS_NAMES.index(row["class"])
        stats = pd_.stats.get((c, row["size"]))
        if stats is not None and c < len(fit.offsets):
            # the level of healthy paths (best of sizes and rounds), beside the plain median of every measurement
            row["healthy_gbps"] = stats.ref_gbps * math.exp(float(fit.offsets[c]))
    levels = {r["class"]: r["healthy_gbps"] for r in res.fleet
              if "healthy_gbps" in r and pd_.sizes and r["size"] == max(pd_.sizes)}
    if "intra-leaf" in levels and "inter-leaf" in levels and levels["intra-leaf"] > 0:
        res.counts["inter_over_intra_leaf"] = round(levels["inter-leaf"] / levels["intra-leaf"], 3)
    del cls
    rel = th.rel
    spread = fit.spread
    res.counts["pair_spread_pct"] = round(100 * spread, 3)
    # node terms
    node_v: list[Verdict] = []
    bad_node = np.zeros(n, dtype=bool)
    nic_names: dict[str, set] = {}
    if ds.pairs["nic"].notna().any():
        sub = ds.pairs[["src", "nic"]].dropna().drop_duplicates()
        for h, nic in sub.itertuples(index=False):
            nic_names.setdefault(str(h), set()).add(str(nic))
    for i, host in enumerate(names):
        ds_, dr = -fit.send[i], -fit.recv[i]
        d = max(ds_, dr)
        m = min(fit.send_n[i], fit.recv_n[i]) if ds_ > rel and dr > rel else (fit.send_n[i] if ds_ >= dr else fit.recv_n[i])
        se = spread * 1.2533 / math.sqrt(max(m, 1))
        res.node_levels[host] = {"send": float(fit.send[i]), "recv": float(fit.recv[i]),
                                 "send_n": int(fit.send_n[i]), "recv_n": int(fit.recv_n[i])}
        if d <= rel or d < th.component_sigmas * se:
            continue
        bad_node[i] = True
        row_failed = [f"{names[j]}" for (a, j) in pd_.failed if a == i][:5]
        all_failed = np.all(pd_.Y[i][np.isfinite(pd_.Y[i])] <= pairdata.FAILED_VALUE + 1e-6) if measured[i].any() else False
        if ds_ > rel and dr > rel:
            where = f"sends at {100 - pct(-ds_):.0f}% and receives at {100 - pct(-dr):.0f}% of the fleet"
        elif ds_ > rel:
            where = f"sends at {100 - pct(-ds_):.0f}% of the fleet (receives normally): the transmit side"
        else:
            where = f"receives at {100 - pct(-dr):.0f}% of the fleet (sends normally): the receive side"
        nics = sorted(nic_names.get(host, []))
        summary = (f"{host} {where} across {m} partners: its NIC, cable or leaf port"
                   + (" (or the host's PCIe path to it; per-NIC data would separate them)" if len(nics) <= 1 else ""))
        if all_failed:
            summary = f"every measurement involving {host} failed: the host or its network attachment is down"
        ident = {"host": host}
        if nics:
            ident["nic"] = ", ".join(nics)
        worst = np.argsort(np.nan_to_num(pd_.Y[i], nan=0.0))[:3]
        node_v.append(Verdict(
            component=host, kind="nic", severity="critical" if all_failed else severity(1 - math.exp(-d)),
            confidence=confidence(d, rel, spread, m), deficit_pct=pct(-d), summary=summary,
            evidence=[f"send term {pct(fit.send[i]):.1f}% below fleet ({fit.send_n[i]} partners), receive term "
                      f"{pct(fit.recv[i]):.1f}% ({fit.recv_n[i]} partners); fleet spread {100 * spread:.1f}%"]
            + ([f"failed pairs with {', '.join(row_failed)}"] if row_failed else []),
            measurements=[{"pair": f"{host}->{names[j]}", "below_fleet_pct": round(pct(float(pd_.Y[i, j])), 1)}
                          for j in worst if np.isfinite(pd_.Y[i, j])],
            retest=[], identifiers=ident, hosts=[host]))
    if leaf is None and bad_node.sum() >= 3:
        node_v = _hidden_groups(node_v, bad_node, pd_.Y, names, rel)
    healthy = ~bad_node
    for v, i in zip([v for v in node_v if v.kind == "nic"], [names.index(v.component) for v in node_v if v.kind == "nic"]):
        v.retest = [f"{names[i]}<->{p}" for p in _retest_partners(i, names, healthy, leaf)]
    # leaf switch: most of a leaf's hosts bad together
    if leaf is not None:
        merged: list[Verdict] = []
        drop: set[str] = set()
        for k, lname in enumerate(leaf_names):
            members = [names[i] for i in np.flatnonzero(leaf == k)]
            badm = [v for v in node_v if v.component in members]
            if len(members) >= 2 and len(badm) >= max(2, math.ceil(0.75 * len(members))):
                d = float(np.median([v.deficit_pct for v in badm])) / 100
                drop |= {v.component for v in badm}
                merged.append(Verdict(
                    component=lname, kind="switch", severity=severity(d),
                    confidence=min(0.95, float(np.mean([v.confidence for v in badm]))), deficit_pct=100 * d,
                    summary=f"{len(badm)} of {len(members)} hosts on {lname} read low in both directions, to "
                            "every partner: the leaf switch itself (or its power/firmware), not each host",
                    evidence=[f"{v.component}: {v.deficit_pct:.0f}% below fleet" for v in badm][:8],
                    retest=[f"{badm[0].component}<->{badm[1].component} (same leaf)"],
                    identifiers={"switch": lname}, hosts=[v.component for v in badm]))
        node_v = [v for v in node_v if v.component not in drop] + merged
    res.verdicts.extend(node_v)
    # uplinks (tomography)
    bad_up: list[int] = []  # leaves whose uplink bundle got a verdict
    if leaf is not None and fit.up is not None:
        ok_src = fit.send > -th.explain
        ok_dst = fit.recv > -th.explain
        ev = {(e.leaf, e.direction): e for e in tomography.link_evidence(pd_.Y, leaf, ok_src, ok_dst, rel)}
        ident_ok = tomography.identifiable(leaf)
        spines = fabric.spines if fabric else []
        switched = {v.component for v in res.verdicts if v.kind == "switch"}
        for k, lname in enumerate(leaf_names):
            if lname in switched:
                continue  # the leaf switch explains its cross-leaf paths too
            du, dd = -fit.up[k], -fit.down[k]
            d = max(du, dd)
            m = int(min(fit.up_n[k], fit.down_n[k]) if du > rel and dd > rel else (fit.up_n[k] if du >= dd else fit.down_n[k]))
            # independent evidence is per partner leaf and host, not per path: count hosts, not pairs
            m_eff = max(2, int(math.sqrt(max(m, 1))))
            if d <= rel or d < th.component_sigmas * spread * 1.2533 / math.sqrt(m_eff):
                continue
            e = ev[(k, "up" if du >= dd else "down")]
            dirs = "both directions" if du > rel and dd > rel else ("toward the spines" if du > dd else "from the spines")
            members = [names[i] for i in np.flatnonzero(leaf == k)]
            others = [names[i] for i in np.flatnonzero((leaf != k) & healthy)]
            inside = [h for h in members if healthy[names.index(h)]]
            conf = confidence(d, rel, spread, m_eff)
            summary = (f"{lname}'s uplinks ({dirs}): cross-leaf paths through them read {pct(-d):.0f}% low while "
                       f"{lname}'s hosts are healthy among themselves and other leaves are healthy")
            if not ident_ok:
                conf = min(conf, 0.5)
                summary += "; with only two leaves an uplink cannot be told from the other leaf's (not identifiable)"
            if len(spines) > 1:
                summary += f"; traffic spreads over {len(spines)} spines (ECMP/adaptive routing), so which spine port is uncertain"
            bad_up.append(k)
            res.verdicts.append(Verdict(
                component=f"{lname} uplink" + (f" ({lname}-{spines[0]})" if len(spines) == 1 else "s"), kind="uplink",
                severity=severity(1 - math.exp(-d)), confidence=conf, deficit_pct=pct(-d), summary=summary,
                evidence=[f"tomography: {e.bad_on} of {e.paths_on} measured paths through it are bad, "
                          f"{e.bad_off} of {e.paths_off} cross-leaf paths elsewhere",
                          f"up term {pct(fit.up[k]):.1f}%, down term {pct(fit.down[k]):.1f}% below fleet"],
                retest=[f"{a}<->{b}" for a, b in zip(inside[:2], others[:2])],
                identifiers={"switch": lname, "spines": spines}, hosts=members, basis="fleet"))
    # directed pairs (paths)
    pair_thr = max(rel, th.pair_sigmas * spread)
    R = fit.residual
    # A degraded uplink bundle is shared: concurrent flows through it split what is left, so the paths through
    # it read low by different amounts depending on what else ran in their round (measured on the lab). A path
    # through it is judged against the spread of the residuals of the paths through that bundle, not the
    # healthy fleet's: only a path far below its bundle's own paths is a fault of its own.
    pair_spread = np.full(R.shape, spread)
    if bad_up:
        cross = leaf[:, None] != leaf[None, :]
        for k in bad_up:
            through = cross & ((leaf[:, None] == k) | (leaf[None, :] == k)) & np.isfinite(R)
            r = R[through]
            if r.size >= 3:
                s_k = 1.4826 * float(np.median(np.abs(r - np.median(r))))
                pair_spread[through] = np.maximum(pair_spread[through], s_k)
    pair_thr_m = np.maximum(rel, th.pair_sigmas * pair_spread)
    with np.errstate(invalid="ignore"):
        flag = (R < -pair_thr_m) & (pd_.Y < -pair_thr_m)
    ii, jj = np.nonzero(flag)
    limit = 500
    if len(ii) > limit:
        res.caveats.append(f"{len(ii)} directed pairs read low beyond their ends' terms; the {limit} worst are reported")
        order = np.argsort(R[ii, jj])[:limit]
        ii, jj = ii[order], jj[order]
    done: set[tuple[int, int]] = set()
    for i, j in zip(ii.tolist(), jj.tolist()):
        if (i, j) in done:
            continue
        both = flag[j, i]
        done.add((i, j))
        if both:
            done.add((j, i))
        d = float(-R[i, j]) if not both else float(-max(R[i, j], R[j, i]))
        sup = int(pd_.support[i, j]) + (int(pd_.support[j, i]) if both else 0)
        rounds = max(1, int(pd_.support[i, j]) // max(1, len(pd_.sizes)))
        failed = (i, j) in pd_.failed and pd_.Y[i, j] <= pairdata.FAILED_VALUE + 1e-6
        a, b = names[i], names[j]
        comp = f"{a}<->{b}" if both else f"{a}->{b}"
        summary = (f"the path {a} {'<->' if both else '->'} {b} reads {pct(-d):.0f}% below what its ends explain "
                   f"({a} and {b} are healthy with other partners): cables, ports or the route between them")
        if failed:
            summary = f"{a}->{b} failed to measure ({pd_.failed[(i, j)][:120]}) while both ends work with others"
        res.verdicts.append(Verdict(
            component=comp, kind="link", severity="critical" if failed else severity(1 - math.exp(-d)),
            confidence=confidence(d, float(max(pair_thr_m[i, j], pair_thr_m[j, i] if both else 0)),
                                  float(max(pair_spread[i, j], pair_spread[j, i] if both else 0)), sup,
                                  cap=0.97 if rounds >= 2 or failed else 0.45),
            deficit_pct=pct(-d), summary=summary + ("" if rounds >= 2 or failed else
                                                    "; measured in one round only: a transient looks the same, "
                                                    "retest to confirm"),
            evidence=[f"{a}->{b}: {pct(float(pd_.Y[i, j])):.1f}% below fleet, residual {pct(float(R[i, j])):.1f}%"
                      f" over {int(pd_.support[i, j])} value(s)"]
            + ([f"{b}->{a}: {pct(float(pd_.Y[j, i])):.1f}% below fleet"] if np.isfinite(pd_.Y[j, i]) else []),
            measurements=[{"pair": f"{a}->{b}", "below_fleet_pct": round(pct(float(pd_.Y[i, j])), 1)}],
            retest=[f"{a}->{b} (twice, in different rounds)",
                    f"{a}->{_retest_partners(j, names, healthy, leaf, 1)[0] if healthy.sum() > 2 else '?'}"],
            identifiers={"hosts": [a, b]}, hosts=[a, b]))
    # intermittent dips: worst round far below, best fine
    if pd_.worst is not None:
        with np.errstate(invalid="ignore"):
            dips = (pd_.worst < -max(2 * rel, pair_thr)) & (pd_.Y > -rel)
        di, dj = np.nonzero(dips)
        for i, j in list(zip(di.tolist(), dj.tolist()))[:50]:
            res.intermittent.append(f"{names[i]}->{names[j]}: one round {pct(float(pd_.worst[i, j])):.0f}% below "
                                    "fleet, its other round(s) normal (intermittent: retest, watch link flaps)")
        if len(di) > 50:
            res.intermittent.append(f"... and {len(di) - 50} more")
    # node x rail
    if pd_.rail_cells is not None:
        v, mat = node_rail(pd_.rail_cells, fabric.leaf_of if fabric else None, pd_.nic_of, rel, spread, th.explain)
        res.verdicts.extend(v)
        res.rail_matrix = mat
    # pair matrix for reports (downsampled beyond 256 nodes: reports show it, analysis used all of it)
    step = max(1, math.ceil(n / 256))
    res.pair_matrix = {"names": names[::step], "values": np.where(np.isfinite(pd_.Y[::step, ::step]),
                                                                  pd_.Y[::step, ::step], np.nan).tolist(),
                       "step": step, "n": n}


def _nic_stage(ds: Dataset, fabric: Fabric | None, th: Thresholds, res: Analysis) -> None:
    g = ds.nics[(ds.nics["status"].astype(str) == "ok") & (ds.nics["bw"] > 0)].copy()
    failed = ds.nics[ds.nics["status"].astype(str) != "ok"]
    for h, nic, err in failed[["host", "nic", "error"]].itertuples(index=False):
        res.verdicts.append(Verdict(component=f"{h}:{nic}", kind="nic", severity="critical", confidence=0.9,
                                    deficit_pct=100.0, summary=f"{h} {nic}: measurement failed ({err})",
                                    retest=[f"ib_write_bw on {h} {nic}"], identifiers={"host": h, "nic": nic},
                                    hosts=[str(h)], basis="data"))
    if g.empty:
        return
    g["log"] = np.log(g["bw"].astype(float))
    big = g.groupby("size")["bw"].median()
    sizes = [s for s, v in big.items() if v >= 0.5 * big.max()]
    g = g[g["size"].isin(sizes)]
    g["norm"] = g["log"] - g.groupby("size")["log"].transform("median")
    cells = g.groupby(["host", "nic"])["norm"].agg(["median", "count"]).reset_index()
    res.hosts = sorted(set(res.hosts) | set(cells["host"].astype(str)))
    if len(cells) < 3:
        res.inconclusive.append(f"NIC measurements: {len(cells)} NIC(s); at least 3 are needed to judge against the fleet")
        return
    spread = max(1.4826 * float(np.median(np.abs(cells["median"] - cells["median"].median()))), th.min_spread)
    if cells.groupby("host")["nic"].nunique().max() >= 2:
        c = cells.rename(columns={"nic": "rail", "median": "value"})
        nic_of = {(h, r): r for h, r in zip(c["host"], c["rail"])}
        v, mat = node_rail(c, fabric.leaf_of if fabric else None, nic_of, th.rel, spread, th.explain)
        res.verdicts.extend(v)
        res.rail_matrix = res.rail_matrix or mat
        return
    for h, nic, med, cnt in cells.itertuples(index=False):
        d = -med
        if d > th.rel:
            res.verdicts.append(Verdict(component=f"{h}:{nic}", kind="nic", severity=severity(1 - math.exp(-d)),
                                        confidence=confidence(d, th.rel, spread, cnt), deficit_pct=pct(-d),
                                        summary=f"{h} {nic} reads {pct(-d):.0f}% below the fleet's NICs",
                                        evidence=[f"median over {cnt} size(s) vs {len(cells)} NICs"],
                                        retest=[f"ib_write_bw between {h} {nic} and a healthy host"],
                                        identifiers={"host": str(h), "nic": str(nic)}, hosts=[str(h)]))


def _collective_expectations(ds: Dataset, fabric: Fabric, th: Thresholds, res: Analysis) -> None:
    g = ds.groups
    if g.empty or fabric.topo is None:
        return
    g = g[(g["status"] == "ok") & (g["hosts"].astype(str) != "") & (g["nranks"] > 0) & np.isfinite(g["busbw"])]
    for (op, hosts, nranks), sub in g.groupby(["op", "hosts", "nranks"]):
        members = [h for h in str(hosts).split(",") if h]
        top = sub[sub["size"] == sub["size"].max()]
        if int(top["size"].iloc[0]) < (256 << 20):
            continue  # small messages measure latency, not the fabric's bandwidth
        nodes = len(members)
        per_node = int(nranks) // nodes if nranks % nodes == 0 else None
        exp = fabric.collective_expected(str(op), nodes, per_node)
        if exp is None:
            continue
        measured = float(top["busbw"].max())
        ratio = measured / exp[0] if exp[0] > 0 else float("nan")
        failed = bool(ratio < th.expected_fraction)
        res.expected.append({"class": f"{op} x{nranks} ({nodes} host{'s' if nodes > 1 else ''})",
                             "size": int(top["size"].iloc[0]), "measured_gbps": measured, "expected_gbps": exp[0],
                             "ratio": ratio, "failed": failed, "formula": exp[1]})
        if failed:
            res.cluster.append({"what": f"{op} on {hosts}", "basis": "topology", "failed": True, "hosts": members,
                                "summary": f"{op} over {nranks} ranks on {', '.join(members[:6])}: busbw {measured:.3g} GB/s "
                                           f"at {int(top['size'].iloc[0])} B is {100 * ratio:.0f}% of the "
                                           f"{exp[0]:.3g} GB/s the topology expects ({exp[1][:120]})"})


def _expectation_stage(fabric: Fabric, th: Thresholds, res: Analysis) -> None:
    if not fabric.expected:
        res.notes.append(f"topology {fabric.name}: no bandwidth expectation available; judged against the fleet only")
        return
    for row in res.fleet:
        exp = fabric.expected.get(row["class"])
        if exp is None:
            continue
        ratio = row["median_gbps"] / exp if exp > 0 else float("nan")
        failed = bool(ratio < th.expected_fraction)
        item = {"class": row["class"], "size": row["size"], "measured_gbps": row["median_gbps"],
                "expected_gbps": exp, "ratio": ratio, "failed": failed}
        res.expected.append(item)
    bad = [e for e in res.expected if e["failed"]]
    if bad:
        worst = min(bad, key=lambda e: e["ratio"])
        res.cluster.append({"what": f"{worst['class']} paths", "basis": "topology", "failed": True,
                            "summary": f"the fleet's median {worst['class']} bandwidth at {worst['size']} B is "
                                       f"{worst['measured_gbps']:.3g} GB/s, {100 * worst['ratio']:.0f}% of the "
                                       f"{worst['expected_gbps']:.3g} GB/s the topology expects "
                                       f"(bar {100 * th.expected_fraction:.0f}%): a fleet-wide shortfall (settings, "
                                       "firmware, routing), not one component"})


def _attach_identifiers(verdicts: list[Verdict], idents: dict) -> None:
    """Physical identifiers the inputs gave (GPU bus id/PCI address and model from nccl-tests and nvbandwidth)."""
    for v in verdicts:
        host = v.identifiers.get("host")
        gpu = v.identifiers.get("gpu")
        known = idents.get(host, {}) if host else {}
        if gpu is not None and gpu in known.get("gpus", {}):
            for key, value in known["gpus"][gpu].items():
                v.identifiers.setdefault(key, value)


def load_baseline(path: str) -> dict:
    """A baseline: JSON written by `analyze --format json`, or a results directory/tool output to analyze."""
    p = Path(path)
    if p.suffix == ".json" and p.exists():
        from fabricbench import limits
        from fabricbench.analyze.input_models import check_baseline

        doc = limits.load_json(p, "--baseline")  # regular file, bounded, depth-limited
        if isinstance(doc, dict) and "fleet" in doc:
            return check_baseline(doc, f"--baseline {path}")  # every median finite and positive
    from fabricbench.analyze.importers import load

    base = analyze(load(path))
    return {"fleet": base.fleet, "nodes": base.node_levels}


def _baseline_stage(baseline: dict, th: Thresholds, res: Analysis) -> None:
    ref = {(r["class"], int(r["size"])): r["median_gbps"] for r in baseline.get("fleet", []) if "class" in r}
    drop = -math.log(1 - th.baseline_drop)
    compared = 0
    for row in res.fleet:
        b = ref.get((row["class"], int(row["size"])))
        if not b:
            continue
        compared += 1
        change = math.log(row["median_gbps"] / b)
        if change < -drop:
            res.cluster.append({"what": f"{row['class']} paths, {row['size']} B", "basis": "baseline", "failed": True,
                                "summary": f"fleet median {row['median_gbps']:.3g} GB/s is {pct(change):.1f}% below the "
                                           f"baseline's {b:.3g} GB/s (SuperBench-style rule: more than "
                                           f"{100 * th.baseline_drop:.0f}% is a regression)"})
    if not compared:
        res.notes.append("baseline: no path class and size in common with these results; not compared")
    nodes = baseline.get("nodes") or {}
    for host, lv in res.node_levels.items():
        b = nodes.get(host)
        if not b:
            continue
        for side in ("send", "recv"):
            change = lv[side] - float(b.get(side, 0.0))
            if change < -drop and lv[side] > -th.rel:  # not already a fleet verdict
                res.verdicts.append(Verdict(
                    component=host, kind="nic", severity="minor",
                    confidence=confidence(-change, drop, max(th.min_spread, 0.01), lv[f"{side}_n"], cap=0.8),
                    deficit_pct=pct(change), basis="baseline", hosts=[host],
                    summary=f"{host} {side} term fell {pct(change):.1f}% relative to the fleet since the baseline "
                            f"(rule: {100 * th.baseline_drop:.0f}%)",
                    evidence=[f"{side} term now {pct(lv[side]):.1f}%, baseline {pct(float(b.get(side, 0))):.1f}%"],
                    retest=[f"a pairwise sweep including {host}"], identifiers={"host": host}))


def analyze(ds: Dataset, fabric: Fabric | None = None, baseline: dict | None = None,
            thresholds: Thresholds | None = None) -> Analysis:
    th = thresholds or Thresholds()
    res = Analysis(thresholds=th, topology=fabric.name if fabric else None)
    res.caveats.extend(ds.caveats)
    res.counts.update(ds.counts())
    if ds.empty():
        res.inconclusive.append("no measurements in the inputs (empty results)")
        return res
    if fabric is not None:
        res.notes.extend(fabric.notes)
    if len(ds.pairs):
        _pairs_stage(ds, fabric, th, res)
        from fabricbench.analyze.latency import latency_stage

        v, notes = latency_stage(ds.pairs, fabric.leaf_of if fabric else None, th.latency_factor, th.min_spread)
        res.verdicts.extend(v)
        res.notes.extend(notes)
    if len(ds.nics):
        _nic_stage(ds, fabric, th, res)
    if len(ds.gpus):
        v, mats = gpu_matrices(ds.gpus, th.rel, th.min_spread, th.nvlink_min)
        res.verdicts.extend(v)
        res.gpu_mats = mats
        res.hosts = sorted(set(res.hosts) | set(ds.gpus["src_host"].astype(str)))
        if not mats:
            res.inconclusive.append("GPU measurements: no host with 3 or more GPUs in one matrix")
    if len(ds.groups):
        v, notes, table = analyze_groups(ds.groups, th.rel, th.min_spread)
        res.verdicts.extend(v)
        res.notes.extend(notes)
        res.groups = table
        if not len(ds.pairs) and not len(ds.gpus) and not len(ds.nics) and not v and notes and not baseline \
                and not (fabric and (fabric.expected or fabric.topo is not None)):
            res.inconclusive.append("only collective results with nothing to compare them to")
    if fabric is not None:
        _expectation_stage(fabric, th, res)
        _collective_expectations(ds, fabric, th, res)
    if baseline:
        _baseline_stage(baseline, th, res)
    # hosts a run named but that never produced a measurement
    seen = ds.hosts()
    missing = sorted(ds.expected_hosts - seen)
    for host in missing:
        res.verdicts.append(Verdict(component=host, kind="node", severity="critical", confidence=0.8, deficit_pct=100.0,
                                    summary=f"{host} was in the run (run.json) but has no measurement: it crashed, "
                                            "hung or never started (a missing measurement counts as a defect)",
                                    retest=[f"srun -w {host} hostname, then a pairwise sweep including it"],
                                    identifiers={"host": host}, hosts=[host], basis="data"))
    res.hosts = sorted(set(res.hosts) | seen | ds.expected_hosts)
    _attach_identifiers(res.verdicts, ds.identifiers)
    res.verdicts.sort(key=lambda v: (-v.confidence, -v.deficit_pct))
    return res
