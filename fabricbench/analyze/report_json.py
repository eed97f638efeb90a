"""JSON report: the verdicts and everything behind them (also usable as a --baseline later)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict


def _clean(obj):
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else round(obj, 6)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item"):
        return _clean(obj.item())
    return obj


def document(res, criteria: dict | None = None) -> dict:
    return _clean({
        "schema": "fabricbench.analyze/1", "status": res.status, "exit_code": res.exit_code,
        "topology": res.topology, "thresholds": asdict(res.thresholds),
        "verdicts": [v.as_dict() for v in res.verdicts], "cluster": res.cluster, "inconclusive": res.inconclusive,
        "caveats": res.caveats, "notes": res.notes, "intermittent": res.intermittent, "suspect_paths": res.suspect_paths[:50], "fleet": res.fleet,
        "expected": res.expected, "groups": res.groups, "node_levels": res.node_levels, "counts": res.counts,
        "hosts": res.hosts, "criteria": criteria, "compared": res.compared, "retests": res.retests,
        "drain_candidates": sorted({v.drainable_host for v in res.drain_candidates(0.0)}),
        "inputs": getattr(res, "inputs", []), "op_inference": getattr(res, "op_inference", []),
    })


def render(res, criteria: dict | None = None) -> str:
    return json.dumps(document(res, criteria), indent=2) + "\n"
