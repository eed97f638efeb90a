"""The verdict record, severities and the confidence model.

Confidence is a function of how far a deficit lies beyond its threshold, in standard errors of the estimate
(spread / sqrt(independent measurements)), and of how much independent evidence there is; it is calibrated on
the simulator (benchmarks/analyze_localization.py): verdicts given >= 0.9 are right >= 90% of the time there.
Verdicts resting on one kind of evidence that cannot separate two causes are capped (e.g. an NVLink inferred
from bandwidth alone, without NVML link state: 0.75).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

KINDS = ("node", "gpu", "nvlink", "nic", "link", "uplink", "switch", "spine")
HOST_KINDS = ("node", "nic", "gpu", "nvlink")  # one host's own hardware: the only kinds that fail or drain a host


@dataclass
class Verdict:
    component: str
    kind: str
    severity: str  # critical | major | minor
    confidence: float
    deficit_pct: float  # how far below the reference, percent (positive = slower)
    summary: str
    evidence: list[str] = field(default_factory=list)
    measurements: list[dict] = field(default_factory=list)
    retest: list[str] = field(default_factory=list)
    identifiers: dict = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    basis: str = "fleet"  # fleet | baseline | topology | group | data
    direction: str = ""  # rx | tx | both (host side), up | down (uplinks)
    pattern: str = "steady"  # steady | intermittent
    sources: list[str] = field(default_factory=list)  # evidence sources behind it
    own_host: str | None = None  # the host whose own hardware is blamed, when it has measurements of its own

    @property
    def drainable_host(self) -> str | None:
        """The one host this verdict may fail or drain: host-side kinds only, and only a host with measurements of
        its own (a host that never reported, a launcher, or the hosts around an uplink/spine/pair are not)."""
        if self.kind not in HOST_KINDS:
            return None
        return self.own_host

    def as_dict(self) -> dict:
        d = asdict(self)
        d["drainable_host"] = self.drainable_host
        d["confidence"] = round(self.confidence, 3)
        d["deficit_pct"] = round(self.deficit_pct, 2)
        return d


def severity(deficit: float) -> str:
    """deficit as a fraction (0.3 = 30% slow)."""
    if deficit >= 0.5:
        return "critical"
    if deficit >= 0.2:
        return "major"
    return "minor"


def confidence(deficit: float, threshold: float, spread: float, support: float, cap: float = 0.99) -> float:
    """Logistic in the margin beyond the threshold measured in standard errors; fewer than 3 independent
    measurements cost confidence whatever the margin (one reading can be a transient)."""
    support = max(support, 1.0)
    se = max(spread * 1.2533 / math.sqrt(support), 1e-6)
    z = (deficit - threshold) / se
    conf = 1.0 / (1.0 + math.exp(-1.6 * (z - 0.5)))
    if support < 2:
        conf = min(conf, 0.6)
    elif support < 3:
        conf = min(conf, 0.8)
    return max(0.0, min(cap, conf))


def pct(log_value: float) -> float:
    """log ratio -> percent below (positive = slower)."""
    return 100.0 * (1.0 - math.exp(log_value))
