"""Evidence sources wrapping the analyzer's older self-contained stages (per-NIC rows, GPU matrices, collective
group tests, topology expectations, baseline, hosts that never reported). Each stage runs its own calibrated
test; its findings enter the weighing step as evidence like any other source's."""

from __future__ import annotations

from fabricbench.analyze.evidence import Context, Evidence, from_verdict, source
from fabricbench.analyze.verdicts import Verdict


def _collect(ctx: Context, name: str, fn) -> list[Evidence]:
    """Run a stage that appends verdicts to ctx.res.verdicts; hand them back as evidence instead."""
    before = len(ctx.res.verdicts)
    fn()
    new = ctx.res.verdicts[before:]
    del ctx.res.verdicts[before:]
    return [from_verdict(v, name) for v in new]


@source("nic-rows", order=30)
def nic_rows(ctx: Context) -> list[Evidence]:
    from fabricbench.analyze.analysis import _nic_stage

    if not len(ctx.dataset.nics):
        return []
    ok = ctx.dataset.nics[ctx.dataset.nics["status"].astype(str) == "ok"]
    ctx.compared("NIC bandwidth", "fleet" if ok["host"].nunique() >= 3 or len(ok) >= 3 else "nothing")
    return _collect(ctx, "nic-rows", lambda: _nic_stage(ctx.dataset, ctx.fabric, ctx.thresholds, ctx.res))


@source("gpu-matrices", order=40)
def gpu_matrices_source(ctx: Context) -> list[Evidence]:
    from fabricbench.analyze.matrices import gpu_matrices

    ds, th, res = ctx.dataset, ctx.thresholds, ctx.res
    if not len(ds.gpus):
        return []
    v, mats = gpu_matrices(ds.gpus, th.rel, th.min_spread, th.nvlink_min)
    res.gpu_mats = mats
    res.hosts = sorted(set(res.hosts) | set(ds.gpus["src_host"].astype(str)))
    if not mats:
        res.inconclusive.append("GPU measurements: no host with 3 or more GPUs in one matrix")
        ctx.compared("GPU x GPU bandwidth", "nothing")
    else:
        ctx.compared("GPU x GPU bandwidth", "fleet", "GPUs of the same host and test")
    return [from_verdict(x, "gpu-matrices") for x in v]


@source("collective-groups", order=60)
def collective_groups(ctx: Context) -> list[Evidence]:
    from fabricbench.analyze.groups import analyze_groups

    ds, th, res = ctx.dataset, ctx.thresholds, ctx.res
    if not len(ds.groups):
        return []
    v, notes, table = analyze_groups(ds.groups, th.rel, th.min_spread)
    res.notes.extend(notes)
    res.groups = table
    comparable = bool(table) and max((t["groups"] for t in table), default=0) >= 3
    ctx.compared("collective bandwidth", "group" if comparable else "nothing",
                 "groups of the same op, ranks and size" if comparable else "fewer than 3 comparable groups")
    if any(x.basis == "data" for x in v):
        ctx.compared("collective results", "data", "#wrong")
    fabric = ctx.fabric
    if not len(ds.pairs) and not len(ds.gpus) and not len(ds.nics) and not v and notes and not ctx.baseline \
            and not (fabric and (fabric.expected or fabric.topo is not None)):
        res.inconclusive.append("only collective results with nothing to compare them to")
    return [from_verdict(x, "collective-groups") for x in v]


@source("topology-expectation", order=70)
def topology_expectation(ctx: Context) -> list[Evidence]:
    from fabricbench.analyze.analysis import _expectation_stage

    if ctx.fabric is None:
        return []
    before = len(ctx.res.expected)
    _expectation_stage(ctx.fabric, ctx.thresholds, ctx.res)
    # collectives are judged by the collectives-vs-topology source (best algorithm, assumed topology)
    for e in ctx.res.expected[before:]:
        ctx.compared(f"{e['class']} at {e['size']} B", "topology", f"expected {e['expected_gbps']:.3g} GB/s")
    return []


@source("baseline", order=80)
def baseline(ctx: Context) -> list[Evidence]:
    from fabricbench.analyze.analysis import _baseline_stage

    if not ctx.baseline:
        return []
    ref = {(r["class"], int(r["size"])) for r in ctx.baseline.get("fleet", []) if "class" in r}
    for row in ctx.res.fleet:
        if (row["class"], int(row["size"])) in ref:
            ctx.compared(f"{row['class']} at {row['size']} B", "baseline")
            row.setdefault("compared_with", "baseline")
    return _collect(ctx, "baseline", lambda: _baseline_stage(ctx.baseline, ctx.thresholds, ctx.res))


@source("run-hosts", order=90)
def run_hosts(ctx: Context) -> list[Evidence]:
    """Hosts the run said it had (run.json) that never produced a measurement. Never drained: a host with no
    measurement of its own may be a naming mismatch, and a launcher is not a node."""
    ds = ctx.dataset
    missing = sorted(ds.expected_hosts - ds.hosts() - ds.launchers)
    out = []
    for host in missing:
        v = Verdict(component=host, kind="node", severity="critical", confidence=0.8, deficit_pct=100.0,
                    summary=f"{host} was in the run (run.json) but has no measurement: it crashed, hung or never "
                            "started (a missing measurement counts as a defect)",
                    retest=[f"srun -w {host} hostname, then a pairwise sweep including it"],
                    identifiers={"host": host}, hosts=[host], basis="data")
        ev = from_verdict(v, "run-hosts")
        ev.own_host = None  # no measurement of its own: reported, never drained
        out.append(ev)
    if out:
        ctx.compared("hosts in the run", "data", "run.json hosts vs measured hosts")
    return out
