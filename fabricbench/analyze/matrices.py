"""Node x rail and GPU x GPU matrices.

Node x rail (one cell per host and rail/NIC): a low cell with a healthy row and column is that NIC (or its
cable or leaf port); a whole row is the host side (PCIe, CPU, the host itself); a whole rail column within one
leaf group is that rail's leaf switch. GPU x GPU (per host and test): a GPU whose row and column are low is the
GPU; a single low cell is the direct link between two GPUs (direct-mesh parts only); behind NVSwitch one bad
link of 18 lowers a GPU's whole row and column by ~5.6% (one link in 18), inside the usual thresholds: such
verdicts say they rest on bandwidth alone and that NVML link state and error counters must confirm them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fabricbench.analyze.verdicts import Verdict, confidence, pct, severity


def _row_col_fit(M: np.ndarray, groups: np.ndarray | None, explain: float):
    """Two-way min-model on a host x rail matrix: row term, column term (per group), residual."""
    rows = np.zeros(M.shape[0])
    cols = np.zeros((int(groups.max()) + 1 if groups is not None else 1, M.shape[1]))
    g = groups if groups is not None else np.zeros(M.shape[0], dtype=int)
    for _ in range(4):
        col_ok = np.ones(M.shape, dtype=bool)
        colv = cols[g]  # per row: its group's column terms
        masked = np.where(colv > -explain, M, np.nan)
        med = np.array([np.nanmedian(r) if np.isfinite(r).sum() >= 2 else np.nan for r in masked])
        rows = np.where(np.isfinite(med), np.minimum(0, np.nan_to_num(med)), rows)
        for k in range(cols.shape[0]):
            sel = (g == k) & (rows > -explain)
            if sel.sum() >= 2:
                sub = M[sel]
                with np.errstate(all="ignore"):
                    m = np.array([np.nanmedian(c) if np.isfinite(c).sum() >= 2 else 0.0 for c in sub.T])
                cols[k] = np.minimum(0, m)
        del col_ok
    pred = np.minimum(rows[:, None], cols[g])
    return rows, cols, pred, M - pred


def node_rail(cells: pd.DataFrame, leaf_of: dict[str, str] | None, nic_of: dict, rel: float, spread: float,
              explain: float) -> tuple[list[Verdict], dict]:
    hosts = sorted(cells["host"].unique(), key=str)
    rails = sorted(cells["rail"].unique())
    hi = {h: i for i, h in enumerate(hosts)}
    ri = {r: i for i, r in enumerate(rails)}
    M = np.full((len(hosts), len(rails)), np.nan)
    C = np.zeros_like(M)
    for h, r, v, c in cells[["host", "rail", "value", "count"]].itertuples(index=False):
        M[hi[h], ri[r]] = v
        C[hi[h], ri[r]] = c
    groups = None
    gnames = ["all hosts"]
    if leaf_of:
        lv = [leaf_of.get(h, "?") for h in hosts]
        gnames = sorted(set(lv))
        groups = np.array([gnames.index(x) for x in lv])
    out: list[Verdict] = []
    if len(hosts) < 3:
        return out, {"hosts": hosts, "rails": [str(r) for r in rails], "values": M.tolist()}
    rows, cols, pred, resid = _row_col_fit(M, groups, explain)
    for i, h in enumerate(hosts):
        for j, r in enumerate(rails):
            d = -resid[i, j]
            if np.isfinite(d) and d > rel and -M[i, j] > rel:
                conf = confidence(d, rel, spread, C[i, j])
                nic = nic_of.get((h, int(r)) if not isinstance(r, str) else (h, r), str(r))
                out.append(Verdict(
                    component=f"{h}:{nic}", kind="nic", severity=severity(d), confidence=conf, deficit_pct=pct(-d),
                    summary=f"{h} rail {r} ({nic}) reads {pct(-d):.0f}% below its rail and host peers; the rest of "
                            f"{h} and rail {r} elsewhere are healthy: the NIC, its cable or its leaf port",
                    evidence=[f"node x rail cell {pct(M[i, j]):.1f}% below fleet over {int(C[i, j])} measurements",
                              f"host row term {pct(rows[i]):.1f}%, rail column term {pct(cols[0 if groups is None else groups[i], j]):.1f}%"],
                    retest=[f"{h} rail {r} with two other hosts' rail {r}"],
                    identifiers={"host": h, "nic": nic, "rail": str(r)}, hosts=[h]))
    for i, h in enumerate(hosts):
        d = -rows[i]
        if d > rel and len(rails) >= 2:
            out.append(Verdict(
                component=h, kind="node", severity=severity(d), confidence=confidence(d, rel, spread, len(rails)),
                deficit_pct=pct(-d), summary=f"every rail of {h} reads {pct(-d):.0f}% low: the host side (PCIe, "
                                             "CPU/NUMA placement, the host itself), not one NIC",
                evidence=[f"row term over {len(rails)} rails: {pct(rows[i]):.1f}% below fleet"],
                retest=[f"{h} against two healthy hosts on every rail"], identifiers={"host": h}, hosts=[h]))
    for k in range(cols.shape[0]):
        members = [h for i, h in enumerate(hosts) if (groups is None or groups[i] == k)]
        for j, r in enumerate(rails):
            d = -cols[k, j]
            if d > rel and len(members) >= 2:
                out.append(Verdict(
                    component=f"rail {r} switch ({gnames[k]})", kind="switch", severity=severity(d),
                    confidence=confidence(d, rel, spread, len(members)), deficit_pct=pct(-d),
                    summary=f"rail {r} reads {pct(-d):.0f}% low on every host of {gnames[k]}: that rail's leaf "
                            "switch (or its uplinks)", evidence=[f"{len(members)} hosts' rail {r} cells low"],
                    retest=[f"rail {r} between two hosts of {gnames[k]}"], identifiers={"rail": str(r)},
                    hosts=members))
    return out, {"hosts": hosts, "rails": [str(r) for r in rails], "values": M.tolist()}


NVLINKS_PER_GPU = 18  # H100 SXM; a degraded link costs ~1/18 of a GPU's NVSwitch bandwidth


def _batched_fit(T: np.ndarray, explain: float, rounds: int = 3):
    """Send/receive terms per GPU for a stack of host matrices T[h, i, j] (NaN diagonal): min-model."""
    import warnings

    H, n, _ = T.shape
    send = np.zeros((H, n))
    recv = np.zeros((H, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(rounds):
            r_ok = recv > -explain
            m = np.where(r_ok[:, None, :], T, np.nan)
            send = np.minimum(0.0, np.nan_to_num(np.nanmedian(m, axis=2)))
            s_ok = send > -explain
            m = np.where(s_ok[:, :, None], T, np.nan)
            recv = np.minimum(0.0, np.nan_to_num(np.nanmedian(m, axis=1)))
    pred = np.minimum(send[:, :, None], recv[:, None, :])
    return send, recv, T - pred


def gpu_matrices(gpus: pd.DataFrame, rel: float, floor: float, nvlink_min: float,
                 direct_mesh: bool = False) -> tuple[list[Verdict], list[dict]]:
    out: list[Verdict] = []
    mats: list[dict] = []
    g = gpus[(gpus["status"].astype(str) == "ok") & np.isfinite(gpus["bw"].astype(float)) & (gpus["bw"] > 0)]
    g = g[g["src_host"].astype(str) == g["dst_host"].astype(str)]
    if g.empty:
        return out, mats
    g = g.assign(log=np.log(g["bw"].astype(float)), host=g["src_host"].astype(str))
    for test, sub in g.groupby("test", sort=True):
        hosts = sorted(sub["host"].unique())
        gids = sorted(set(sub["src_gpu"]) | set(sub["dst_gpu"]))
        n = len(gids)
        if n < 3:
            continue
        hi = {h: i for i, h in enumerate(hosts)}
        gi = {x: i for i, x in enumerate(gids)}
        T = np.full((len(hosts), n, n), np.nan)
        T[sub["host"].map(hi).to_numpy(), sub["src_gpu"].map(gi).to_numpy(), sub["dst_gpu"].map(gi).to_numpy()] = \
            sub["log"].to_numpy()
        for k in range(n):
            T[:, k, k] = np.nan
        fleet = len(hosts) >= 3
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if fleet:
                T = T - np.nanmedian(T, axis=0)[None]
            else:
                T = T - np.nanmedian(T.reshape(len(hosts), -1), axis=1)[:, None, None]
        reference = "fleet (same cell on other hosts)" if fleet else "this host's median"
        send, recv, resid = _batched_fit(T, min(nvlink_min, rel) * 0.6)
        r = resid[np.isfinite(resid)]
        spread = max(1.4826 * float(np.median(np.abs(r - np.median(r)))) if r.size >= 3 else 0.0, floor * 0.2)
        term = np.minimum(send, recv) if direct_mesh else 0.5 * (send + recv)
        flagged_hosts = set()
        for h_i, k in zip(*np.nonzero(-term >= nvlink_min)):
            host, gid, d = hosts[h_i], gids[k], float(-term[h_i, k])
            flagged_hosts.add(host)
            links = d * NVLINKS_PER_GPU
            near = abs(links - round(links)) < 0.35 and 1 <= round(links) <= 2
            if d < rel or (near and d < 0.15):
                kind, cap, thr = "nvlink", 0.75, nvlink_min
                summary = (f"{host} GPU {gid}: row and column read {pct(-d):.1f}% low, about {max(1, round(links))} "
                           f"of {NVLINKS_PER_GPU} NVLinks: a degraded NVLink (inferred from bandwidth alone; "
                           f"confirm with NVML link state and error counters: nvidia-smi nvlink -s -i {gid}, "
                           f"nvidia-smi nvlink -e -i {gid})")
            else:
                kind, cap, thr = "gpu", 0.99, rel
                summary = (f"{host} GPU {gid}: every transfer to and from it reads {pct(-d):.0f}% low: the GPU "
                           "(clocks, power, PCIe/NVLink port of that GPU)")
            out.append(Verdict(component=f"{host}:GPU{gid}", kind=kind, severity=severity(d),
                               confidence=confidence(d, thr, spread, n - 1, cap=cap), deficit_pct=pct(-d),
                               summary=summary,
                               evidence=[f"{test}: send term {pct(send[h_i, k]):.1f}%, receive term "
                                         f"{pct(recv[h_i, k]):.1f}% (vs {reference})",
                                         "evidence: bandwidth matrix only (no NVML link state in these results)"
                                         if kind == "nvlink" else f"{n - 1} partner GPUs each way"],
                               retest=[f"nvbandwidth -t {test} on {host}", f"nvidia-smi nvlink -s -i {gid} on {host}"],
                               identifiers={"host": host, "gpu": int(gid)}, hosts=[host]))
        ok_gpu = (send > -rel) & (recv > -rel)
        with np.errstate(invalid="ignore"):
            cells = (resid < -rel) & ok_gpu[:, :, None] & ok_gpu[:, None, :]
        for h_i, a, b in zip(*np.nonzero(cells)):
            host, d = hosts[h_i], float(-resid[h_i, a, b])
            flagged_hosts.add(host)
            out.append(Verdict(
                component=f"{host}:GPU{gids[a]}->GPU{gids[b]}", kind="nvlink", severity=severity(d),
                confidence=confidence(d, rel, spread, 1, cap=0.9), deficit_pct=pct(-d),
                summary=f"{host}: GPU {gids[a]} -> GPU {gids[b]} reads {pct(-d):.0f}% low while both GPUs are "
                        "healthy with every other partner: the link (or path) between them",
                evidence=[f"{test}: cell residual {pct(-d):.1f}%"], retest=[f"nvbandwidth -t {test} on {host}"],
                identifiers={"host": host, "gpus": [int(gids[a]), int(gids[b])]}, hosts=[host]))
        for h_i, host in enumerate(hosts):
            if host in flagged_hosts or len(mats) < 2:
                mats.append({"host": host, "test": str(test), "gpus": [int(x) for x in gids],
                             "values": T[h_i].tolist(), "reference": reference})
    return out, mats
