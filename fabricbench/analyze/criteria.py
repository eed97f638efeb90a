"""Acceptance criteria: a YAML file saying which tests and thresholds must hold; pass/fail per node and cluster.

    thresholds:              # optional: override Thresholds defaults (docs/analyze.md)
      fleet_fraction: 0.93
    tests:
      - name: fabric-health          # no verdict of these kinds at or above this confidence
        kinds: [nic, link, uplink, switch, node]
        min_confidence: 0.5
      - name: gpu-health
        kinds: [gpu, nvlink]
      - name: inter-leaf-bandwidth   # absolute floor: the fleet median (cluster) and each node's level
        min_gbps: 40
        class: inter-leaf            # intra-leaf | inter-leaf | inter-node (default: every class)
      - name: expectation            # the topology expectation / baseline findings must not fail
        cluster_findings: true

Without a file the criteria are one test, `no-faults`: no verdict of any kind at or above min_confidence and
no failed cluster finding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fabricbench.analyze.verdicts import HOST_KINDS, KINDS
from fabricbench.errors import UsageError


@dataclass
class Test:
    name: str
    kinds: list[str] | None = None
    min_confidence: float | None = None
    min_gbps: float | None = None
    path_class: str | None = None
    cluster_findings: bool = False


@dataclass
class Criteria:
    tests: list[Test] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)
    source: str = "default"


def default() -> Criteria:
    return Criteria([Test("no-faults", kinds=list(KINDS), cluster_findings=True)])


def load_criteria(path: str) -> Criteria:
    from fabricbench import limits
    from fabricbench.analyze.input_models import check_test, check_thresholds

    doc = limits.load_yaml(path, "--criteria", 1 << 20)  # regular file, UTF-8, no aliases, bounded
    if not isinstance(doc, dict) or not isinstance(doc.get("tests"), list) or not doc["tests"]:
        raise UsageError(f"--criteria {path}: expected a mapping with a non-empty 'tests:' list")
    tests = []
    for i, t in enumerate(doc["tests"]):
        if not isinstance(t, dict) or not t.get("name"):
            raise UsageError(f"--criteria {path}: tests[{i}] needs a name")
        check_test(t, f"--criteria {path}", i)  # finite, in range
        unknown = set(t) - {"name", "kinds", "min_confidence", "min_gbps", "class", "cluster_findings"}
        if unknown:
            raise UsageError(f"--criteria {path}: tests[{i}] ({t['name']}): unknown key(s) {', '.join(sorted(unknown))}")
        kinds = t.get("kinds")
        if kinds is not None:
            if not isinstance(kinds, list) or any(k not in KINDS for k in kinds):
                raise UsageError(f"--criteria {path}: tests[{i}] kinds must be a list of {', '.join(KINDS)}")
        try:
            mc = float(t["min_confidence"]) if t.get("min_confidence") is not None else None
            mg = float(t["min_gbps"]) if t.get("min_gbps") is not None else None
        except (TypeError, ValueError):
            raise UsageError(f"--criteria {path}: tests[{i}] ({t['name']}): thresholds must be numbers") from None
        if kinds is None and mg is None and not t.get("cluster_findings"):
            raise UsageError(f"--criteria {path}: tests[{i}] ({t['name']}) checks nothing (give kinds, min_gbps "
                             "or cluster_findings)")
        tests.append(Test(str(t["name"]), kinds, mc, mg, t.get("class"), bool(t.get("cluster_findings"))))
    th = doc.get("thresholds") or {}
    if not isinstance(th, dict):
        raise UsageError(f"--criteria {path}: thresholds must be a mapping")
    check_thresholds(th, f"--criteria {path}")
    return Criteria(tests, th, str(path))


def evaluate(crit: Criteria, res) -> dict:
    """{'cluster': {'pass': bool, 'tests': {name: {'pass', 'why'}}}, 'nodes': {host: {'pass', 'failed': [..]}}}"""
    nodes = {h: {"pass": True, "failed": []} for h in res.hosts}
    tests_out = {}
    for t in crit.tests:
        why: list[str] = []
        if t.kinds is not None:
            mc = t.min_confidence if t.min_confidence is not None else res.thresholds.min_confidence
            hits = [v for v in res.verdicts if v.kind in t.kinds and v.confidence >= mc]
            for v in hits:
                why.append(f"{v.kind} {v.component} ({v.confidence:.2f})")
                # a host fails only for its own hardware: uplink, spine, switch and path verdicts fail the
                # cluster test, never the hosts they touch
                h = _own_host(v)
                if h:
                    nodes.setdefault(h, {"pass": True, "failed": []})
                    nodes[h]["pass"] = False
                    nodes[h]["failed"].append(f"{t.name}: {v.kind} {v.component}")
        if t.min_gbps is not None:
            rows = [r for r in res.fleet if t.path_class in (None, r["class"])]
            if not rows:
                why.append("no measurements of that class")
            if rows:
                top = max(r["size"] for r in rows)
                for r in rows:
                    if r["size"] == top and r["median_gbps"] < t.min_gbps:
                        why.append(f"fleet median {r['class']} {r['median_gbps']:.3g} GB/s < {t.min_gbps:g}")
                ref = {r["class"]: r["median_gbps"] for r in rows if r["size"] == top}
                base = min(ref.values())
                for host, lv in res.node_levels.items():
                    level = base * math.exp(min(lv["send"], lv["recv"]))
                    if level < t.min_gbps:
                        nodes.setdefault(host, {"pass": True, "failed": []})
                        nodes[host]["pass"] = False
                        nodes[host]["failed"].append(f"{t.name}: {level:.3g} GB/s < {t.min_gbps:g}")
                        why.append(f"{host} {level:.3g} GB/s")
        if t.cluster_findings:
            why += [c["summary"] for c in res.cluster if c.get("failed")]
        tests_out[t.name] = {"pass": not why, "why": why[:20]}
    inconclusive = res.exit_code == 3
    if inconclusive:
        # nothing judged (or not enough evidence): the criteria cannot pass
        tests_out["evidence"] = {"pass": False, "why": list(res.inconclusive[:5]) or ["nothing was judged"]}
    return {"source": crit.source, "cluster": {"pass": all(t["pass"] for t in tests_out.values()), "tests": tests_out,
                                               "inconclusive": inconclusive},
            "nodes": nodes}


def _own_host(v) -> str | None:
    """The host a verdict fails: its own measured host, or a host-side verdict about one host that produced no
    measurement (reported as failing, never drained)."""
    if getattr(v, "drainable_host", None):
        return v.drainable_host
    if v.kind in HOST_KINDS and len(v.hosts) == 1:
        return v.hosts[0]
    return None
