"""The search, independent of what is measured (tested on deterministic objectives).

- Successive halving over the implementation subspace (algorithm, protocol): every candidate runs once, then
  the candidates that are not close to the best at any size lose their place (those more than `drop_factor`
  slower than the best at every size go at once; then the slower half), and the survivors run again, until
  every survivor is the best at some size with enough samples. The default runs in every round, so every
  sample has a default sample from the same round beside it.
- Coordinate descent over the resource knobs inside one subspace (AutoCCL's observation: they behave
  unimodally): walk one knob at a time towards lower cost until neither neighbour improves.
- Exhaustive: every candidate `repeats` times, nothing dropped.

A candidate whose run fails (wrong data, crash, timeout) is rejected with its reason and the search goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Candidate:
    name: str
    env: tuple[tuple[str, str], ...] = ()  # environment the ranks get (sorted pairs: hashable)
    group: str = ""  # implementation subspace, e.g. 'ring/simple' or 'allreduce=segmented_ring'
    resources: tuple[tuple[str, object], ...] = ()
    is_default: bool = False

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


@dataclass
class Sample:
    """One run of one candidate: time per operation per size (µs) or why it failed."""

    candidate: str
    round: int
    phase: str
    status: str  # ok | wrong-data | failed | timeout
    times_us: dict[int, float] = field(default_factory=dict)
    busbw_gbps: dict[int, float] = field(default_factory=dict)
    reason: str = ""
    nwrong: int = 0
    wall_s: float = 0.0
    run_dir: str = ""
    retried: str = ""  # why a first attempt crashed or hung, when this sample is the retry


    @property
    def ok(self) -> bool:
        return self.status == "ok"


Measure = Callable[[Candidate, int, str], Sample]


class DefaultFailed(RuntimeError):
    """The library's defaults did not run cleanly: nothing can be compared with them."""


@dataclass
class Ledger:
    """Every sample, the rejected candidates and the run count: what the report and tuning.parquet show."""

    samples: list[Sample] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # candidate -> why
    survivors: list[str] = field(default_factory=list)  # candidates still in the running when the search ended

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        if not sample.ok and sample.candidate not in self.rejected:
            self.rejected[sample.candidate] = f"{sample.status}: {sample.reason}" if sample.reason else sample.status

    def ok_samples(self, name: str, phase: str | None = None) -> list[Sample]:
        return [s for s in self.samples if s.candidate == name and s.ok and (phase is None or s.phase == phase)]

    def medians(self, name: str) -> dict[int, float]:
        by_size: dict[int, list[float]] = {}
        for s in self.ok_samples(name):
            for size, t in s.times_us.items():
                by_size.setdefault(size, []).append(t)
        return {size: float(np.median(v)) for size, v in by_size.items()}

    @property
    def runs(self) -> int:
        return len(self.samples)


def _measure(ledger: Ledger, measure: Measure, cand: Candidate, rnd: int, phase: str) -> bool:
    sample = measure(cand, rnd, phase)
    ledger.add(sample)
    if not sample.ok and cand.is_default:
        raise DefaultFailed(f"the defaults failed ({sample.status}: {sample.reason}); fix that before tuning")
    return sample.ok


def per_size_best(ledger: Ledger, names: list[str]) -> dict[int, tuple[str, float]]:
    """size -> (candidate with the lowest median time, that time)."""
    best: dict[int, tuple[str, float]] = {}
    for name in names:
        for size, t in ledger.medians(name).items():
            if size not in best or t < best[size][1]:
                best[size] = (name, t)
    return best


def scores(ledger: Ledger, names: list[str]) -> dict[str, float]:
    """How close each candidate comes to the best at its best size: 1.0 = best somewhere; 1.5 = at least 50%
    slower than the best at every size."""
    best = per_size_best(ledger, names)
    out = {}
    for name in names:
        med = ledger.medians(name)
        ratios = [med[s] / best[s][1] for s in best if s in med and best[s][1] > 0]
        out[name] = min(ratios) if ratios else math.inf
    return out


def successive_halving(candidates: list[Candidate], measure: Measure, ledger: Ledger | None = None,
                       eta: float = 2.0, drop_factor: float = 1.5, min_samples: int = 2,
                       max_rounds: int = 6) -> Ledger:
    ledger = ledger or Ledger()
    alive = list(candidates)
    for rnd in range(max_rounds):
        alive = [c for c in alive if _measure(ledger, measure, c, rnd, "search") or c.is_default]
        names = [c.name for c in alive]
        sc = scores(ledger, names)
        winners = {name for name, _t in per_size_best(ledger, names).values()}
        keep = [c for c in alive if c.is_default or c.name in winners or sc[c.name] <= drop_factor]
        others = sorted((c for c in keep if not c.is_default and c.name not in winners), key=lambda c: sc[c.name])
        won = [c for c in keep if not c.is_default and c.name in winners]
        target = max(len(won), math.ceil(sum(not c.is_default for c in keep) / eta))
        room = max(0, target - len(won))
        survivors = {c.name for c in keep if c.is_default or c.name in winners} | {c.name for c in others[:room]}
        alive = [c for c in keep if c.name in survivors]
        settled = all(c.is_default or c.name in winners for c in alive)
        enough = all(len(ledger.ok_samples(c.name)) >= min_samples for c in alive)
        if settled and enough:
            break
    ledger.survivors = [c.name for c in alive]
    return ledger


def exhaustive(candidates: list[Candidate], measure: Measure, repeats: int, ledger: Ledger | None = None) -> Ledger:
    ledger = ledger or Ledger()
    alive = list(candidates)
    for rnd in range(repeats):
        alive = [c for c in alive if _measure(ledger, measure, c, rnd, "exhaustive") or c.is_default]
    ledger.survivors = [c.name for c in alive]
    return ledger


def coordinate_descent(start: dict[str, object], axes: dict[str, list], cost: Callable[[dict], float | None],
                       max_evals: int = 50) -> tuple[dict, float, int]:
    """Minimise cost over a grid, one axis at a time (unimodal along each axis). cost(point) None = failed
    (never chosen). Returns (best point, its cost, evaluations)."""
    cache: dict[tuple, float] = {}

    def evaluate(point: dict) -> float:
        key = tuple(sorted(point.items(), key=lambda kv: kv[0]))
        if key not in cache:
            if len(cache) >= max_evals:
                return math.inf
            value = cost(dict(point))
            cache[key] = math.inf if value is None else float(value)
        return cache[key]

    point = dict(start)
    best = evaluate(point)
    improved = True
    while improved:
        improved = False
        for axis, values in axes.items():
            i = values.index(point[axis])
            for step in (+1, -1):
                j = i + step
                while 0 <= j < len(values):
                    trial = dict(point, **{axis: values[j]})
                    value = evaluate(trial)
                    if value < best:
                        best, point, i, improved = value, trial, j, True
                        j += step
                    else:
                        break
    return point, best, len(cache)


@dataclass
class WalkStep:
    """One evaluation of the resource stage: which knob, which value, its cost and whether the walk moved."""

    axis: str
    value: object
    cost: float  # inf: failed or not measured
    accepted: bool
    note: str = ""


@dataclass
class WalkResult:
    point: dict
    cost: float
    start_cost: float
    evaluations: int
    steps: list[WalkStep] = field(default_factory=list)
    stopped: str = ""  # why the walk ended early ("budget", "max evaluations"), '' when it converged


def unimodal_descent(start: dict[str, object], axes: dict[str, list], cost: Callable[[dict], float | None],
                     noise: float = 0.02, max_evals: int = 50, may_continue: Callable[[], bool] | None = None,
                     passes: int = 2) -> WalkResult:
    """Coordinate descent over ordered resource knobs that behave unimodally (AutoCCL's observation).

    One knob at a time, starting from its default (`start`; None = the library chooses, i.e. the knob is not
    set): walk one step up; while a step lowers the cost by more than `noise` (relative) below the best so far,
    keep walking that way; stop at the first step that does not. Only when the first step up did not improve is
    the other direction tried. A knob whose start is None (the library's own choice, not a point on the axis)
    is probed at the middle of its values first and walked from there only if that beats the library's choice.
    Evaluations are cached; a failed point (cost None) is never chosen and ends the walk in that direction.
    `may_continue()` is asked before every new evaluation (the budget): False ends the walk where it stands.
    Returns the best point, its cost, the starting cost and every step."""
    cache: dict[tuple, float] = {}
    steps: list[WalkStep] = []
    state = {"stopped": "", "fresh": False}

    def record(step: WalkStep) -> None:
        if state["fresh"]:  # a cached point (seen in an earlier pass) is not a new run
            steps.append(step)

    def key(point: dict) -> tuple:
        return tuple(sorted(point.items(), key=lambda kv: kv[0]))

    def evaluate(point: dict) -> float | None:
        k = key(point)
        state["fresh"] = k not in cache
        if k in cache:
            return cache[k]
        if len(cache) >= max_evals:
            state["stopped"] = state["stopped"] or "max evaluations"
            return None
        if may_continue is not None and cache and not may_continue():
            state["stopped"] = state["stopped"] or "budget"
            return None
        value = cost(dict(point))
        cache[k] = math.inf if value is None else float(value)
        return cache[k]

    def better(value: float, best: float) -> bool:
        return value < best * (1.0 - noise)

    point = dict(start)
    best = evaluate(point)
    if best is None or not math.isfinite(best):
        return WalkResult(point, math.inf, math.inf, len(cache), steps, "the starting point failed")
    start_cost = best
    for _ in range(max(1, passes)):
        moved = False
        for axis, values in axes.items():
            if state["stopped"]:
                break
            current = point.get(axis)
            if current is None or current not in values:
                mid = values[(len(values) - 1) // 2]
                trial = dict(point, **{axis: mid})
                value = evaluate(trial)
                if value is None:
                    break
                ok = better(value, best)
                record(WalkStep(axis, mid, value, ok, "probe from the library's choice"))
                if not ok:
                    continue
                best, point, moved = value, trial, True
                directions = (+1, -1)
            else:
                directions = (+1, -1)
            i = values.index(point[axis])
            for step in directions:
                j, walked = i + step, False
                while 0 <= j < len(values):
                    trial = dict(point, **{axis: values[j]})
                    value = evaluate(trial)
                    if value is None:
                        break
                    ok = better(value, best)
                    record(WalkStep(axis, values[j], value, ok))
                    if not ok:
                        break
                    best, point, i, walked, moved = value, trial, j, True, True
                    j += step
                if walked or state["stopped"]:
                    break  # unimodal: having improved going one way, the other way cannot improve
        if not moved or state["stopped"]:
            break
    return WalkResult(point, best, start_cost, len(cache), steps, state["stopped"])
