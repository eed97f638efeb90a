"""Evidence source: what NCCL said it did (NCCL_DEBUG=INFO logs; fabricbench.engine.nccl_log reads them).

The usual causes of a false "bad fabric" are read from the log, not guessed from bandwidth:
- inter-node traffic over TCP sockets (NET/Socket) where a fabric was expected: on every host, a job or
  configuration fault (NCCL_IB_DISABLE, NCCL_NET, missing plugin); on some hosts only, those hosts' RDMA stack;
- GPUDirect RDMA off where the topology has NICs next to the GPUs (traffic staged through host memory);
- fewer NICs in use than the topology has (NCCL_IB_HCA, a port down, a missing device).
CollNet (SHARP) and NVLS start failures are reported: NCCL then ran another algorithm, so a collective measured
against the topology's best algorithm reads low for a software reason.
"""

from __future__ import annotations

import re
from collections import defaultdict

from fabricbench.analyze.evidence import Context, Evidence, source

NVLS_FAIL = re.compile(r"NVLS.*(?:fail|not available|disabl|error)|(?:fail|error).*NVLS", re.I)


def _hosts_by(per_rank: list[dict], pred) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for s in per_rank:
        if pred(s):
            out[s.get("host") or "?"].append(s.get("rank"))
    return out


def _ranks(ranks: list) -> str:
    from fabricbench.engine.nccl_log import _rank_list

    return _rank_list([r for r in ranks if isinstance(r, int)]) or "?"


def _socket(s: dict) -> bool:
    return int((s.get("transports") or {}).get("NET/Socket") or 0) > 0 or (
        s.get("net_class") == "Socket" and not any(k.startswith("NET/") and k != "NET/Socket" and n
                                                   for k, n in (s.get("transports") or {}).items()))


def _fabric_nics(topo) -> list:
    return [n for n in topo.node_type.nics if n.link_layer in ("ib", "roce")] if topo is not None else []


@source("nccl-logs", order=55)
def nccl_logs(ctx: Context) -> list[Evidence]:
    logs = ctx.dataset.extra.get("nccl_logs") or []
    if not logs:
        return []
    res = ctx.res
    topo = getattr(ctx.fabric, "topo", None) if ctx.fabric is not None else None
    nics = _fabric_nics(topo)
    evidence: list[Evidence] = []
    table = getattr(res, "nccl", [])
    for rec in logs:
        src = rec.get("source", "log")
        per_rank = [s for s in rec.get("per_rank") or [] if isinstance(s, dict)]
        hosts = rec.get("hosts") or sorted({s.get("host") for s in per_rank if s.get("host")})
        multi = len(hosts) > 1 or (rec.get("nnodes") or 0) > 1
        table.append({"source": src, "note": rec.get("note", ""), "ranks": [
            {"rank": s.get("rank"), "host": s.get("host"), "device": s.get("device"), "transport": s.get("transport"),
             "network": s.get("network"), "gdr": s.get("gdr"), "nics": s.get("ib_devices") or [],
             "collnet_failed": s.get("collnet_failed")} for s in per_rank]})
        if not per_rank:
            res.notes.append(f"{src}: NCCL log without per-rank lines (nothing to judge)")
            continue
        basis = "topology" if topo is not None else "data"
        res.hosts = sorted(set(res.hosts) | set(hosts))
        name = src.rsplit("/", 1)[-1]
        if not any(s.get("transport") for s in per_rank):
            ctx.compared(f"NCCL log {name}", "nothing", "no transport reported")
            res.inconclusive.append(f"{name}: NCCL reported no connection ('Channel/Ring NN : a -> b via ...'): "
                                    "its transport cannot be judged")
        else:
            ctx.compared(f"NCCL log {name}", "data", "what NCCL reported choosing")
        # 1. sockets
        sock = _hosts_by(per_rank, _socket)
        if sock and multi:
            all_hosts = set(hosts) <= set(sock)
            env = (per_rank[0].get("env") or {})
            why = "; ".join(f"{k}={env[k]}" for k in ("NCCL_IB_DISABLE", "NCCL_NET", "NCCL_IB_HCA") if k in env)
            if all_hosts:
                res.cluster.append({
                    "what": "NCCL transport", "basis": "data", "failed": True, "hosts": [],
                    "summary": f"{src}: inter-node traffic ran over TCP sockets (NET/Socket) on every host "
                               f"({len(per_rank)} ranks on {len(hosts)} hosts{'; ' + why if why else ''}): the "
                               "bandwidth measured is the TCP path, not the fabric. Fix NCCL's network (RDMA "
                               "driver, libibverbs, net plugin, NCCL_IB_DISABLE/NCCL_NET) before judging the fabric"})
            else:
                for host, ranks in sorted(sock.items()):
                    kinds = sorted({s.get("transport") or "?" for s in per_rank if s.get("host") == host})
                    evidence.append(Evidence(
                        source="nccl-logs", component=host, kind="node", deficit=0.0, support=len(ranks), noise=0.0,
                        basis="data", fact=True, confidence=0.9, hosts=[host], own_host=host,
                        summary=f"{host}: NCCL used TCP sockets (NET/Socket) on ranks {_ranks(ranks)} while the "
                                "other hosts used the fabric: this host's RDMA stack (driver, libibverbs, port) is "
                                "not usable",
                        details=[f"{src}: transports {', '.join(kinds)}"],
                        retest=[f"ibv_devinfo and ibstat on {host}; rerun with NCCL_DEBUG=INFO"],
                        identifiers={"host": host}))
        # 2. GPUDirect RDMA off where the topology has NICs next to the GPUs
        gdr_nics = [n for n in nics if n.gpus]
        if gdr_nics and multi:
            off = _hosts_by(per_rank, lambda s: s.get("gdr") is False and not _socket(s))
            for host, ranks in sorted(off.items()):
                evidence.append(Evidence(
                    source="nccl-logs", component=host, kind="node", deficit=0.0, support=len(ranks), noise=0.0,
                    basis="topology", fact=True, confidence=0.85, hosts=[host], own_host=host,
                    summary=f"{host}: NCCL ran without GPUDirect RDMA on ranks {_ranks(ranks)} although topology "
                            f"{topo.name} puts a NIC next to each GPU: traffic is staged through host memory "
                            "(nvidia-peermem / dma-buf, NCCL_NET_GDR_LEVEL, ACS/IOMMU settings)",
                    details=[f"{src}: network {per_rank[0].get('network') or '?'}, GDR off"],
                    retest=[f"lsmod | grep nvidia_peermem on {host}; rerun with NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=NET"],
                    identifiers={"host": host}))
        # 3. fewer NICs than the topology has
        if nics and multi:
            for host in hosts:
                used = max((len(s.get("ib_devices") or []) for s in per_rank if s.get("host") == host), default=0)
                if 0 < used < len(nics):
                    names = next((s.get("ib_devices") for s in per_rank
                                  if s.get("host") == host and s.get("ib_devices")), [])
                    evidence.append(Evidence(
                        source="nccl-logs", component=host, kind="node", deficit=1.0 - used / len(nics), support=1,
                        noise=0.0, basis=basis, fact=True, confidence=0.85, hosts=[host], own_host=host,
                        summary=f"{host}: NCCL found {used} of the {len(nics)} fabric NICs topology {topo.name} lists "
                                "(NCCL_IB_HCA, a port down, or a missing device): inter-node bandwidth is capped at "
                                f"{used}/{len(nics)}",
                        details=[f"{src}: NET/IB using {', '.join(names[:8])}",
                                 f"topology: {', '.join(n.name for n in nics)}"],
                        retest=[f"ibstat on {host}; check NCCL_IB_HCA"], identifiers={"host": host}))
        # 4. CollNet / NVLS start failures: why a collective may read below the best algorithm
        if rec.get("collnet_failed"):
            res.notes.append(f"{src}: CollNet (SHARP) failed to start ({_first(rec, 'CollNet')}); NCCL fell back "
                             "to point-to-point algorithms, so collectives read below what SHARP would give")
        nv = [w for w in rec.get("warnings") or [] if NVLS_FAIL.search(w)] or (
            [rec["nvls_failed"]] if rec.get("nvls_failed") else [])
        if nv:
            res.notes.append(f"{src}: NVLS did not start ({nv[0][:160]}); all_reduce ran without NVLink SHARP")
        if not any(s.get("transport") for s in per_rank):
            res.notes.append(f"{src}: no connection lines ('Channel/Ring NN : a -> b via ...') in the log: the "
                             "transport was not reported (NCCL_DEBUG_SUBSYS without INIT, or the run failed first)")
    res.nccl = table
    return evidence


def _first(rec: dict, word: str) -> str:
    w = next((w for w in rec.get("warnings") or [] if word.lower() in w.lower()), "")
    return w[:140] or "no reason printed"
