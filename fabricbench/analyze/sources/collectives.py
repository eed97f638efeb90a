"""Evidence source: collectives (nccl-tests tables, fabricbench group runs) against the topology's expectation.

The expectation is the best algorithm NCCL could use on that layout (ring, tree, NVLS, NVLS between NVLink
domains; fabricbench.topology.collectives) at the largest size measured. When the op was not named and several
collectives fit the table, the most permissive candidate's expectation is used. A run is short below
`COLLECTIVE_FRACTION` of that expectation; between it and the pair bar (`Thresholds.expected_fraction`) it is
reported as below the model but within its uncertainty (the collective model's efficiencies come from a few
published runs, e.g. NVLS from 8x H100; GB200 NVL72 racks publish ~77% of it: coreweave/nccl-tests README).

Without --topology, the shipped topology whose GPU model and GPUs per host match the inputs' Rank lines is
assumed, and the report says so; `--topology none` opts out. CollNet (SHARP in the IB switches) is not
modelled: the topology format has no in-network reduction field, so SHARP runs are judged against NVLS/tree.
"""

from __future__ import annotations

import re

import numpy as np

from fabricbench.analyze.evidence import Context, Evidence, source

COLLECTIVE_FRACTION = 0.70
MIN_BANDWIDTH_SIZE = 256 << 20  # below this nccl-tests measures latency more than bandwidth
TOPO_OPS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter",
            "alltoall": "all_to_all", "all_to_all": "all_to_all", "broadcast": "broadcast", "reduce": "reduce",
            "sendrecv": "sendrecv", "allreduce": "all_reduce", "allgather": "all_gather",
            "reducescatter": "reduce_scatter"}
BOUND_NAMES = {"intra": "the NVLink domain", "nvls": "the NVLink domain (NVLS)", "nic": "the NICs"}


def _family(model: str) -> tuple[str, str] | None:
    """'NVIDIA A100-SXM4-40GB' -> ('A100', 'sxm'); 'NVIDIA GB200' -> ('GB200', ''); unknown names -> None."""
    text = model.upper()
    m = re.search(r"\b(GB\d{3}|GH\d{3}|[ABHLV]\d{2,3}[A-Z]?)\b", text.replace("-", " "))
    if not m:
        return None
    form = "pcie" if "PCIE" in text else "sxm" if ("SXM" in text or "HBM" in text) else ""
    return m.group(1), form


def input_gpus(identifiers: dict) -> tuple[str | None, int | None]:
    """The GPU model and GPUs per host the inputs name (Rank lines), when they agree across hosts."""
    models, per_host = set(), set()
    for ident in identifiers.values():
        gpus = ident.get("gpus") or {}
        if not gpus:
            continue
        per_host.add(len(gpus))
        models |= {str(g.get("name", "")).strip() for g in gpus.values() if g.get("name")}
    model = models.pop() if len(models) == 1 else None
    return model, (per_host.pop() if len(per_host) == 1 else None)


def assume_topology(identifiers: dict):
    """(topology, why) for the shipped topology matching the inputs' GPU model and GPUs per host, else (None, why)."""
    model, per_host = input_gpus(identifiers)
    if not model:
        return None, "the inputs name no single GPU model"
    fam = _family(model)
    if fam is None:
        return None, f"GPU model {model!r} is not one a shipped topology describes"
    try:
        from fabricbench.topology.load import list_topologies, load_topology
    except ImportError:
        return None, "fabricbench.topology is not available"
    matches = []
    for name in list_topologies():
        try:
            topo = load_topology(name)
        except Exception:  # a broken shipped file must not break the analysis
            continue
        nt = topo.node_type
        tfam = _family(nt.gpus.model or "")
        if not tfam or tfam[0] != fam[0] or (fam[1] and tfam[1] and fam[1] != tfam[1]):
            continue
        # the hosts' GPU count must be the node type's (a run may use fewer GPUs of a host, so only >= is known)
        if per_host and per_host > nt.gpus.count:
            continue
        matches.append((per_host == nt.gpus.count, name, topo))
    if not matches:
        return None, f"no shipped topology has {model} GPUs ({per_host or '?'} per host)"
    matches.sort(key=lambda t: (not t[0], t[1]))
    _, name, topo = matches[0]
    return topo, (f"topology {name} assumed: the inputs name {model} GPUs, {per_host or '?'} per host "
                  "(give --topology for your system, or --topology none to opt out)")


def best_expectation(topo, op: str, nodes: int, per_node: int | None) -> dict | None:
    """The best applicable algorithm's row for `op` (fabricbench.topology.collectives), or None."""
    from fabricbench.topology.collectives import OPS, expectations

    name = TOPO_OPS.get(op, op)
    if name not in OPS:
        return None
    try:
        table = expectations(topo, nodes, per_node, [name], None)
    except Exception:  # more hosts or GPUs than the topology has, or a layout it cannot bound
        return None
    rows = [r for r in table.get("rows", []) if r.get("applicable") and r.get("expected_busbw")]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["expected_busbw"])
    return {**best, "domain": table.get("domain", ""), "others": {r["algorithm"]: r["expected_busbw"] for r in rows}}


def _tables(groups):
    g = groups[(groups["status"].astype(str) == "ok") & np.isfinite(groups["busbw"]) & (groups["busbw"] > 0)]
    for (op, hosts, nranks, src), sub in g.groupby(["op", "hosts", "nranks", "source"], dropna=False):
        yield str(op), str(hosts or ""), int(nranks), str(src), sub


@source("collectives-vs-topology", order=60)
def collectives_vs_topology(ctx: Context) -> list[Evidence]:
    ds, res, th = ctx.dataset, ctx.res, ctx.thresholds
    if not len(ds.groups):
        return []
    topo = getattr(ctx.fabric, "topo", None) if ctx.fabric is not None else None
    assumed = ""
    if topo is None and ctx.fabric is None and not ds.extra.get("topology_opt_out"):
        topo, why = assume_topology(ds.identifiers)
        if topo is not None:
            assumed = why
            res.notes.append(why)
            res.topology = res.topology or f"{topo.name} (assumed, for collectives)"
        else:
            res.notes.append(f"collectives: no topology to compare them with ({why}); give --topology")
    if topo is None:
        ctx.compared("collectives vs topology", "nothing", "no topology")
        return []
    per_host_topo = topo.node_type.gpus.count or None
    judged: list[dict] = []
    for op, hosts, nranks, src, sub in _tables(ds.groups):
        members = [h for h in hosts.split(",") if h]
        size = int(sub["size"].max())
        label = f"{op} x{nranks}" if nranks > 0 else op
        if op == "unknown" or nranks < 2:
            ctx.compared(f"collective {label}", "nothing", "collective or rank count unknown")
            continue
        if size < MIN_BANDWIDTH_SIZE:
            ctx.compared(f"collective {label}", "nothing", f"largest size {size >> 20} MiB measures latency")
            res.notes.append(f"{label} ({src}): largest size {size >> 20} MiB is below {MIN_BANDWIDTH_SIZE >> 20} MiB; "
                             "not compared with the topology (bandwidth needs large messages)")
            continue
        nodes = len(members) or (nranks // per_host_topo if per_host_topo and nranks % per_host_topo == 0 else 0)
        if not nodes or nranks % nodes:
            ctx.compared(f"collective {label}", "nothing", "hosts unknown")
            res.notes.append(f"{label} ({src}): the hosts are not named and {nranks} ranks do not divide into "
                             f"{topo.name}'s {per_host_topo} GPUs per host; not compared")
            continue
        per_node = nranks // nodes
        cands = []
        for cand in op.split("|"):
            exp = best_expectation(topo, cand, nodes, per_node)
            if exp is not None:
                cands.append((exp["expected_busbw"], cand, exp))
        if not cands:
            ctx.compared(f"collective {label}", "nothing", f"no expectation for {op} on {nodes} x {per_node}")
            res.notes.append(f"{label} ({src}): {topo.name} gives no expectation for {op} over {nodes} host(s) x "
                             f"{per_node} rank(s); not compared")
            continue
        expected, cand, exp = min(cands, key=lambda t: t[0])  # most permissive candidate
        top = sub[sub["size"] == size]
        measured = float(top["busbw"].max())
        ratio = measured / expected
        short = ratio < COLLECTIVE_FRACTION
        bound = BOUND_NAMES.get(str(exp.get("bound")), str(exp.get("bound")))
        row = {"class": f"{label} ({nodes} host{'s' if nodes > 1 else ''})", "size": size, "measured_gbps": measured,
               "expected_gbps": float(expected), "ratio": ratio, "failed": short, "bound": bound,
               "algorithm": exp.get("algorithm"), "formula": str(exp.get("formula", ""))[:200], "op": cand,
               "nodes": nodes, "hosts": members, "source": src}
        res.expected.append(row)
        judged.append(row)
        ctx.compared(f"collective {label}", "topology",
                     f"{topo.name}{' (assumed)' if assumed else ''}: {exp.get('algorithm')} bound by {bound}")
        if not short and ratio < th.expected_fraction:
            res.notes.append(f"{label} on {nodes} host(s): busbw {measured:.4g} GB/s is {100 * ratio:.0f}% of the "
                             f"{expected:.4g} GB/s {exp.get('algorithm')} could reach (bound: {bound}); below the "
                             f"model but within its uncertainty for collectives (blamed below "
                             f"{100 * COLLECTIVE_FRACTION:.0f}%)")
    if judged:  # compared with an (assumed) topology: no longer "nothing to compare them to"
        res.inconclusive[:] = [i for i in res.inconclusive if not i.startswith("only collective results")]
    for row in judged:
        if not row["failed"]:
            continue
        where = ", ".join(row["hosts"][:6]) + (" ..." if len(row["hosts"]) > 6 else "") or "unnamed hosts"
        side = _which_side(row, judged)
        res.cluster.append({
            "what": f"{row['class']}", "basis": "topology", "failed": True, "hosts": row["hosts"],
            "bound": row["bound"],
            "summary": (f"{row['class']} on {where}: busbw {row['measured_gbps']:.4g} GB/s at "
                        f"{_human(row['size'])} is {100 * row['ratio']:.0f}% of the {row['expected_gbps']:.4g} GB/s "
                        f"that {row['algorithm']} reaches on {topo.name} (bound: {row['bound']}){side}"
                        + (" [topology assumed]" if assumed else ""))})
    return []


def _which_side(row: dict, judged: list[dict]) -> str:
    """Given single-node and multi-node runs together, say which side is short."""
    if row["nodes"] < 2:
        return "; single host: the NVLink domain (GPUs, NVSwitch) is short"
    singles = [r for r in judged if r["nodes"] == 1]
    if not singles:
        return ""
    same = [r for r in singles if set(r["hosts"]) & set(row["hosts"])]
    pool = same or singles
    pool = [r for r in pool if r["op"] == row["op"]] or pool  # the same collective first
    good = [r for r in pool if not r["failed"]]
    where = "on the same hosts" if same else "on other hosts of this model"
    if good and len(good) == len(pool):
        best = max(good, key=lambda r: r["ratio"])
        return (f"; single-host runs {where} reach {100 * best['ratio']:.0f}% of theirs, so the NVLink side is "
                "fine and the shortfall is between hosts (NICs, cables, switches, NCCL's network settings)")
    return f"; single-host runs {where} are short too: the NVLink domain side is short"


def _human(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"
