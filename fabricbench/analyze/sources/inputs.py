"""Not evidence: records which inputs the analysis read (files, results directories), for the reports'
provenance. The CLI replaces it with the paths exactly as the user gave them."""

from __future__ import annotations

from fabricbench.analyze.evidence import Context, Evidence, source


@source("inputs", order=1000)
def inputs(ctx: Context) -> list[Evidence]:
    ctx.res.inputs = list(dict.fromkeys(ctx.dataset.sources))
    ctx.res.op_inference = list(ctx.dataset.extra.get("op_inference") or [])
    return []
