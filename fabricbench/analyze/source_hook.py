"""Runs the evidence sources of branch analyzer-sources (collectives vs topology, NCCL logs, link state) from
analyze() until analyze() runs every registered source itself; then this module and its one call go."""

from __future__ import annotations

OWN_SOURCES = ("collectives-vs-topology", "nccl-logs", "link-state")


def run_own_sources(ds, fabric, baseline, thresholds, res) -> None:
    from fabricbench.analyze.evidence import Context, sources
    from fabricbench.analyze.weigh import weigh

    if not getattr(res, "inputs", None):
        res.inputs = list(dict.fromkeys(ds.sources))  # for the reports' provenance
    ctx = Context(dataset=ds, fabric=fabric, baseline=baseline, thresholds=thresholds, res=res)
    evidence = []
    for src in sources():
        if src.name in OWN_SOURCES:
            evidence.extend(src.run(ctx))
    res.evidence.extend(evidence)
    verdicts, retests = weigh(evidence)
    res.verdicts.extend(verdicts)
    res.retests.extend(r for r in retests if r not in res.retests)
    # collectives judged against an (assumed) topology are no longer "nothing to compare them to"
    if any(c["basis"] == "topology" and c["what"].startswith("collective") for c in res.compared):
        res.inconclusive[:] = [i for i in res.inconclusive if not i.startswith("only collective results")]
