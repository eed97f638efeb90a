"""The one place where evidence becomes verdicts and confidence (sources: fabricbench/analyze/evidence.py).

Rules, the same for every source:
- a deficit blames only beyond the basis's own threshold and beyond the noise the data shows: the margin is
  measured in standard errors, `noise / sqrt(support)` (verdicts.confidence: logistic in that margin, capped
  when fewer than 3 independent measurements agree);
- `chance` (the expected number of equally bad components if nothing were wrong, from the data's own tail)
  caps confidence at 1 / (1 + chance / FALSE_ALARM_BUDGET): many tests at once make single extreme readings
  expected, and a run may spend at most about FALSE_ALARM_BUDGET expected false verdicts per source (0.5 at
  chance = 0.01, 0.9 at chance = 0.001), so a healthy fabric exits 0 in at least ~99% of runs per source;
- `pattern == "retest"` never becomes a verdict: it is listed for a retest;
- `basis == "nothing"` never blames;
- evidence about the same component from several independent sources combines (1 - prod(1 - c)), capped by the
  strongest source's cap; the strongest source's summary leads.
"""

from __future__ import annotations

import math

from fabricbench.analyze.evidence import HOST_KINDS, Evidence
from fabricbench.analyze.verdicts import Verdict, confidence, severity

FALSE_ALARM_BUDGET = 0.01  # expected false verdicts per run a multiple-testing source may spend


def _log(frac: float) -> float:
    return -math.log(max(1e-6, 1.0 - min(frac, 0.999999)))


def evidence_confidence(ev: Evidence) -> float:
    if ev.basis == "nothing" or ev.pattern == "retest":
        return 0.0
    if ev.fact:
        conf = 0.9 if ev.confidence is None else ev.confidence
    elif ev.confidence is not None:
        conf = ev.confidence
    else:
        d, thr = _log(ev.deficit), _log(ev.threshold)
        if d <= thr:
            return 0.0
        conf = confidence(d, thr, max(ev.noise, 1e-3), max(ev.support, 1))
    if ev.chance is not None:
        conf = min(conf, 1.0 / (1.0 + max(ev.chance, 0.0) / FALSE_ALARM_BUDGET))
    return max(0.0, min(conf, ev.cap))


def to_verdict(group: list[Evidence]) -> Verdict | None:
    scored = sorted(((evidence_confidence(e), e) for e in group), key=lambda t: -t[0])
    best_c, best = scored[0]
    if best_c <= 0.0:
        return None
    by_source: dict[str, float] = {}
    for c, e in scored:
        by_source[e.source] = max(by_source.get(e.source, 0.0), c)
    miss = 1.0
    for c in by_source.values():
        miss *= (1.0 - c)
    conf = min(max(best_c, 1.0 - miss), max(e.cap for _, e in scored))
    details, meas, retest, hosts = [], [], [], []
    for _, e in scored:
        details += [d for d in e.details if d not in details]
        meas += e.measurements
        retest += [r for r in e.retest if r not in retest]
        hosts += [h for h in e.hosts if h not in hosts]
    ident = {}
    for _, e in reversed(scored):
        ident.update(e.identifiers)
    sev = best.severity or severity(best.deficit)
    return Verdict(component=best.component, kind=best.kind, severity=sev, confidence=conf,
                   deficit_pct=100.0 * best.deficit, summary=best.summary, evidence=details[:12],
                   measurements=meas[:12], retest=retest[:6], identifiers=ident, hosts=hosts,
                   basis=best.basis, direction=best.direction, pattern=best.pattern,
                   sources=sorted(by_source), own_host=best.own_host if best.kind in HOST_KINDS else None)


def weigh(evidence: list[Evidence]) -> tuple[list[Verdict], list[str]]:
    """Verdicts (one per component) and the retest list (evidence too weak to blame, said as what to rerun)."""
    groups: dict[tuple[str, str], list[Evidence]] = {}
    retests: list[str] = []
    for e in evidence:
        if e.pattern == "retest":
            line = f"{e.component}: {e.summary}" if e.summary else e.component
            if line not in retests:
                retests.append(line)
            continue
        groups.setdefault(e.key(), []).append(e)
    out = []
    for group in groups.values():
        v = to_verdict(group)
        if v is not None:
            out.append(v)
    return out, retests
