"""The analyzer's pipeline: named evidence sources in, one weighing step out.

A *source* reads the inputs (pair matrix, latency, failed pairs, NIC rows, GPU matrices, collectives, baseline,
topology expectation, link state, NCCL logs, ...) and returns `Evidence` records: statements about one
component, each with how far it is below its reference, how many independent measurements back it, how noisy
one measurement of its class is (estimated from the data), and what it was compared with. Sources never build
verdicts or confidences themselves; `fabricbench.analyze.weigh.weigh` is the one place that turns evidence
into verdicts and confidence, so that every source is judged by the same rules.

Writing a source (one module under fabricbench/analyze/sources/, with its own tests):

    from fabricbench.analyze.evidence import Evidence, source

    @source("link-state", order=50)          # order: sources run in ascending order (pair matrix is 10)
    def link_state(ctx):                    # ctx: Context (dataset, fabric, baseline, thresholds, res, shared)
        if not ctx.dataset.extra.get("ibstat"):
            return []                       # nothing to say: no evidence, no opinion
        ctx.compared("link state", "topology")   # say what each measurement class was compared with
        return [Evidence(source="link-state", component="cn001:mlx5_0", kind="nic", deficit=1.0, support=1,
                         noise=0.0, basis="topology", fact=True, summary="port 1 is Down; the topology expects it up",
                         hosts=["cn001"], own_host="cn001", details=["ibstat: State: Down, Physical state: Polling"])]

Modules in fabricbench/analyze/sources/ are found and imported automatically (no list to edit).

Field meanings (units: fractions, not percent):

- `deficit`: how far below the reference, as a fraction of it (0.3 = reads 30% low, 1.0 = dead/zero); for a
  latency source, the fraction of *extra* time expressed the same way (1 - fleet/measured). 0 for pure facts.
- `threshold`: the deficit the basis itself calls a fault (fleet: 1 - fleet_fraction; baseline: baseline_drop;
  topology: 1 - expected_fraction). Evidence at or below it is recorded but never blames.
- `support`: independent measurements that agree (distinct partners, rounds with different co-runners,
  sizes); repeated readings of one pair in one round count once.
- `noise`: robust sigma of the log of one measurement of this class and size (1.4826 x MAD of residuals),
  estimated from the data by the source. The weigher compares `deficit` with `noise / sqrt(support)`.
- `chance`: optional, the expected number of components as bad as this one among everything the source tested,
  if nothing were wrong (a data-driven multiple-testing correction, e.g. tested pairs x empirical tail rate ^
  rounds). The weigher turns it into confidence 1 / (1 + chance) at most.
- `basis`: fleet | baseline | topology | data (a fact read from the inputs, e.g. wrong results, a port down) |
  nothing (no reference: never blames, makes the run inconclusive if nothing else was judged).
- `direction`: rx | tx | both for host-side patterns, up | down for uplinks, "" otherwise.
- `pattern`: steady | intermittent (bad in some rounds only) | retest (too little to blame: a single failed
  pair, a single-round dip; listed for a retest, never a verdict).
- `own_host`: the host whose own hardware the evidence blames, only for host-side kinds and only when that
  host has measurements of its own. `hosts`: every host the evidence touches (retests, reports).
- `fact`: a reading that is true by itself (a port Down, #wrong > 0, every measurement failed); the weigher
  uses `confidence` from the source (default 0.9) instead of statistics.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

BASES = ("fleet", "baseline", "topology", "data", "group", "nothing")
HOST_KINDS = ("node", "nic", "gpu", "nvlink")  # kinds that are one host's own hardware
PATTERNS = ("steady", "intermittent", "retest")


@dataclass
class Evidence:
    source: str
    component: str
    kind: str
    deficit: float
    support: int
    noise: float
    basis: str = "fleet"
    threshold: float = 0.0
    direction: str = ""
    pattern: str = "steady"
    chance: float | None = None
    fact: bool = False
    confidence: float | None = None  # facts (and sources with their own calibrated test) only
    cap: float = 0.99  # the most this kind of evidence can say alone (e.g. bandwidth-only NVLink: 0.75)
    summary: str = ""
    details: list[str] = field(default_factory=list)
    measurements: list[dict] = field(default_factory=list)
    retest: list[str] = field(default_factory=list)
    identifiers: dict = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    own_host: str | None = None
    severity: str | None = None  # None: from the deficit

    def key(self) -> tuple[str, str]:
        return (self.kind, self.component)


@dataclass
class Context:
    """What a source sees. `res` is the Analysis being built (sources may add notes, caveats, fleet rows,
    cluster findings and `compared` entries); `shared` passes intermediate results between sources (the pair
    source leaves its fit under "pairs")."""

    dataset: Any
    fabric: Any
    baseline: dict | None
    thresholds: Any
    res: Any
    shared: dict = field(default_factory=dict)

    def compared(self, what: str, basis: str, detail: str = "") -> None:
        """Record what a measurement class was compared with (fleet | baseline | topology | data | nothing)."""
        assert basis in BASES, basis
        self.res.compared.append({"what": what, "basis": basis, "detail": detail})


@dataclass
class Source:
    name: str
    order: int
    run: Callable[[Context], list[Evidence]]


_REGISTRY: dict[str, Source] = {}
_LOADED = False


def source(name: str, order: int = 100):
    """Decorator registering `fn(ctx) -> list[Evidence]` as the evidence source `name`."""

    def wrap(fn):
        _REGISTRY[name] = Source(name, order, fn)
        return fn

    return wrap


def sources() -> list[Source]:
    """Every registered source in run order (imports fabricbench.analyze.sources.* once)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from fabricbench.analyze import sources as pkg

        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))


def from_verdict(v, source_name: str) -> Evidence:
    """Evidence from a verdict-shaped result of an older stage whose test computes its own calibrated
    confidence (node x rail, GPU matrices, group tests): weighed like any other evidence."""
    own = None
    if v.kind in HOST_KINDS:
        own = (v.identifiers or {}).get("host") or (v.hosts[0] if len(v.hosts) == 1 else None)
    return Evidence(source=source_name, component=v.component, kind=v.kind, deficit=max(v.deficit_pct, 0.0) / 100,
                    support=1, noise=0.0, basis=v.basis, confidence=v.confidence, severity=v.severity,
                    summary=v.summary, details=list(v.evidence), measurements=list(v.measurements),
                    retest=list(v.retest), identifiers=dict(v.identifiers), hosts=list(v.hosts), own_host=own,
                    direction=getattr(v, "direction", ""), pattern=getattr(v, "pattern", "steady"))
