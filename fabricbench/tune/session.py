"""`fabricbench tune`: calibrate, plan against the budget, search, confirm, write the outputs.

Per op: the defaults run first (their wall time prices the plan); successive halving (or --exhaustive) over
the implementation subspace; coordinate descent over resource knobs inside the winning subspaces; then the
tuned configuration, as written to disk (rules file / tuner config), runs interleaved with the defaults and
only sizes whose speed-up interval lies above 1 keep their choice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fabricbench.errors import UsageError
from fabricbench.tune.outputs import Decision, tuned_env_for, write_outputs
from fabricbench.tune.runner import RunSpec, describe, run_with_retry
from fabricbench.tune.search import (Candidate, DefaultFailed, Ledger, Sample, exhaustive, per_size_best,
                                     successive_halving, unimodal_descent)
from fabricbench.tune.space import DEFAULT, Space, build_space
from fabricbench.tune.stats import MIN_GAIN, ratio_ci

Echo = Callable[[str], None]


@dataclass
class TuneOptions:
    spec: RunSpec
    out: Path
    budget_s: float
    exhaustive: bool = False
    repeats: int = 5  # exhaustive: runs per candidate
    confirm_pairs: int = 5  # interleaved default/tuned pairs that decide a claim
    eta: float = 2.0
    drop_factor: float = 1.5
    nccl_version: str | None = None
    plan_only: bool = False
    only: list[str] | None = None  # restrict the implementation candidates to these names (the default always runs)
    resources: bool = True  # the resource stage (coordinate descent over ordered resource knobs); --no-resources


def make_space(opts: TuneOptions, op: str, nranks: int) -> Space:
    space = build_space(opts.spec.backend, op, nranks, opts.nccl_version)
    if opts.only:
        names = [c.name for c in space.implementations]
        unknown = [n for n in opts.only if n not in names]
        if unknown:
            raise UsageError(f"--only {','.join(unknown)}: not a candidate for {op}; choose from {', '.join(names[1:])}")
        space.implementations = [c for c in space.implementations if c.is_default or c.name in opts.only]
        space.axes = {g: a for g, a in space.axes.items() if any(c.group == g for c in space.implementations)}
    if not opts.resources:
        space.axes, space.start = {}, {}
    return space


@dataclass
class OpResult:
    op: str
    space: Space
    ledger: Ledger
    decisions: list[Decision]
    elapsed_s: float
    runs: int
    context: dict = field(default_factory=dict)


def spec_sizes(spec: RunSpec) -> int:
    from fabricbench.engine.sizes import parse_size, size_sweep

    try:
        return len(size_sweep(parse_size(spec.minbytes), parse_size(spec.maxbytes), spec.stepfactor))
    except Exception:  # the run itself reports bad sizes; the estimate then assumes one
        return 1


def estimate_parts(space: Space, opts: TuneOptions, nsizes: int = 1) -> dict[str, int]:
    """Runs per stage: 'search' (halving or exhaustive), 'resources' (the walk), 'confirm'."""
    n = len(space.implementations)
    confirm = 2 * opts.confirm_pairs
    one_at_a_time = sum(len(v) - 1 for axes in space.axes.values() for v in axes.values())
    if opts.exhaustive:
        return {"search": (n + one_at_a_time) * opts.repeats, "resources": 0, "confirm": confirm}
    # halving: everything once, then at most half of what is left per round
    halving = n + math.ceil(n / opts.eta) + math.ceil(n / opts.eta**2) + 2
    # the walk runs inside the subspaces that win a size (at most one per size); per knob, a step each way
    # when the default is best and up to 3 when it walks (the walk itself stops when the budget would not hold)
    winners = sorted(space.axes.values(), key=lambda a: -sum(min(len(v) - 1, 3) for v in a.values()))
    walk = sum(sum(min(len(v) - 1, 3) for v in axes.values()) for axes in winners[:max(1, min(nsizes, len(winners)))])
    return {"search": halving, "resources": walk, "confirm": confirm}


def estimate_runs(space: Space, opts: TuneOptions, nsizes: int = 1) -> int:
    return sum(estimate_parts(space, opts, nsizes).values())


class Tuner:
    def __init__(self, opts: TuneOptions, echo: Echo):
        self.opts, self.echo = opts, echo
        self.runs_dir = opts.out / "runs"
        self._seq = 0
        self.context: dict = {}
        self.measured: dict[str, list[Sample]] = {}  # every run so far, saved after each (partial results kept)
        self.t0 = time.monotonic()
        self.per_run = 0.0  # seconds one run takes (the calibration run), for the budget guard
        self._walks: dict[str, list[dict]] = {}  # op -> the resource stage's walks
        self.reserved_runs = 0  # runs the rest of the session needs after the current stage (confirmation, later ops)

    # -- measuring --------------------------------------------------------------------------------------------
    def _measure(self, spec: RunSpec, op: str) -> Callable[[Candidate, int, str], Sample]:
        def measure(cand: Candidate, rnd: int, phase: str) -> Sample:
            self._seq += 1
            safe = "".join(ch if ch.isalnum() or ch in "-_=." else "_" for ch in cand.name)
            sample = run_with_retry(spec, cand, self.runs_dir / op / f"{self._seq:04d}-{phase}-{safe}", rnd, phase)
            self.measured.setdefault(op, []).append(sample)
            self._save_partial()
            mark = "ok" if sample.ok else f"REJECTED ({sample.status}: {sample.reason})"
            if sample.retried:
                mark += f" (retried after {sample.retried})"
            self.echo(f"  [{self._seq:3d}] {phase:10s} r{rnd} {cand.name:38s} {sample.wall_s:6.1f} s  {mark}")
            return sample

        return measure

    def _save_partial(self) -> None:
        from fabricbench.results.io import atomic_write_bytes
        from fabricbench.tune.outputs import PARQUET, measurements_frame

        frame = measurements_frame(list(self.measured.items()))
        if len(frame):
            atomic_write_bytes(self.opts.out / PARQUET, frame.to_parquet(index=False))

    # -- one op -----------------------------------------------------------------------------------------------
    def tune_op(self, op: str, nranks: int, baseline: Sample) -> OpResult:
        opts = self.opts
        spec = RunSpec(**{**opts.spec.__dict__, "ops": [op]})
        space = make_space(opts, op, nranks)
        measure = self._measure(spec, op)
        ledger = Ledger()
        t0 = time.monotonic()
        default = space.implementations[0]
        baseline.candidate, baseline.round = default.name, 0

        def measure_after_baseline(cand, rnd, phase):  # round 0's default is the calibration run
            if cand.is_default and rnd == 0 and phase in ("search", "exhaustive"):
                baseline.phase = phase
                return baseline
            return measure(cand, rnd, phase)

        if opts.exhaustive:
            cands = list(space.implementations)
            for group, axes in space.axes.items():  # every value of each knob, one knob at a time
                base = next(c for c in space.implementations if c.group == group)
                for key, values in axes.items():
                    for value in values:
                        if value != space.start[group][key]:
                            cands.append(space.with_resources(base, {key: value}))
            exhaustive(cands, measure_after_baseline, opts.repeats, ledger)
        else:
            successive_halving(space.implementations, measure_after_baseline, ledger, eta=opts.eta,
                               drop_factor=opts.drop_factor)
            walks = self._resource_stage(space, ledger, measure) if space.axes else []
            self._walks[op] = walks
        decisions = self._confirm(space, spec, ledger, measure)
        result = OpResult(op, space, ledger, decisions, time.monotonic() - t0, ledger.runs)
        result.context["resource_stage"] = walks if not opts.exhaustive else []
        return result

    def budget_allows_one_more(self) -> bool:
        """Another run now still leaves time for what the session must still do (confirmation, later ops)."""
        if self.per_run <= 0:
            return True
        left = self.opts.budget_s - (time.monotonic() - self.t0)
        return left >= self.per_run * (1 + self.reserved_runs)

    def _resource_stage(self, space: Space, ledger: Ledger, measure) -> list[dict]:
        """Coordinate descent over the ordered resource knobs of each subspace that won some size: one knob at
        a time from its default, walking while a step is faster than the best so far by more than the noise
        (cost = geometric mean time over the sizes that subspace won). Every point is a fresh-process run with
        the data check; a point that fails is rejected and ends the walk that way. Returns one record per walk."""
        best = per_size_best(ledger, [n for n in ledger.survivors if n not in ledger.rejected])
        walks = []
        for group, axes in space.axes.items():
            base = next(c for c in space.implementations if c.group == group)
            sizes = sorted(s for s, (name, _t) in best.items() if name == base.name)
            if not sizes:
                continue
            noise = _noise(ledger, base.name, sizes)

            def cost(point, base=base, sizes=sizes):
                cand = space.with_resources(base, point)
                if cand.name == base.name:
                    med = ledger.medians(base.name)
                else:
                    if cand.name in ledger.rejected:
                        return None
                    sample = measure(cand, 0, "descent")
                    ledger.add(sample)
                    if not sample.ok:
                        return None
                    med = sample.times_us
                if not all(s in med for s in sizes):
                    return None
                return float(np.exp(np.mean([np.log(med[s]) for s in sizes])))

            self.echo(f"  resource stage in {group} (sizes {', '.join(map(str, sizes))}; noise {noise:.1%}): "
                      + ", ".join(f"{a} {vals}" for a, vals in axes.items()))
            walk = unimodal_descent(dict(space.start[group]), axes, cost, noise=noise, max_evals=40,
                                    may_continue=self.budget_allows_one_more)
            chosen = space.with_resources(base, walk.point)
            gain = walk.start_cost / walk.cost if walk.cost and math.isfinite(walk.cost) else math.nan
            self.echo(f"  resource stage in {group}: {chosen.name} after {walk.evaluations - 1} run(s), "
                      f"{gain:.3f}x over {base.name} in single runs"
                      + (f"; stopped early ({walk.stopped})" if walk.stopped else ""))
            walks.append({
                "group": group, "base": base.name, "sizes": sizes, "noise": noise, "chosen": chosen.name,
                "point": walk.point, "start_cost_us": walk.start_cost, "best_cost_us": walk.cost,
                "single_run_gain": gain, "runs": walk.evaluations - 1, "stopped": walk.stopped,
                "steps": [{"axis": st.axis, "value": st.value, "cost_us": st.cost, "accepted": st.accepted,
                           "note": st.note} for st in walk.steps],
                "axes": {a: {"values": list(v), "default": space.start[group].get(a),
                             "debug_only": space.resource_axes[a].debug_only if a in space.resource_axes else None,
                             "written": space.resource_axes[a].written if a in space.resource_axes else "",
                             "knobs": list(space.resource_axes[a].knobs) if a in space.resource_axes else []}
                         for a, v in axes.items()}})
        return walks

    # -- confirmation -----------------------------------------------------------------------------------------
    def _choices(self, space: Space, ledger: Ledger) -> dict[int, Candidate]:
        known = {c.name: c for c in space.implementations}
        # survivors of the search (exhaustive: resource points survive too); where the resource stage walked a
        # subspace, the point it ended on stands for that subspace (not any point it passed: a step that was not
        # better beyond the noise must not win on one lucky run)
        walked = {w["base"]: w["chosen"] for w in self._walks.get(space.op, [])}
        wanted = list(dict.fromkeys(walked.get(n, n) for n in ledger.survivors))
        by_name = {n: known[n] if n in known else self._rebuild(space, n) for n in wanted}
        names = [n for n in by_name if n not in ledger.rejected and ledger.ok_samples(n)]
        return {size: by_name[name] for size, (name, _t) in per_size_best(ledger, names).items()}

    def _rebuild(self, space: Space, name: str) -> Candidate:
        for base in space.implementations:
            if name.startswith(base.name + ","):
                point = {}
                for part in name[len(base.name) + 1:].split(","):
                    key, value = part.split("=")
                    point[key] = int(value)
                return space.with_resources(base, point)
        raise KeyError(name)

    def _confirm(self, space: Space, spec: RunSpec, ledger: Ledger, measure) -> list[Decision]:
        choices = self._choices(space, ledger)
        default = space.implementations[0]
        tuned_sizes = {s: c for s, c in choices.items() if not c.is_default}
        decisions = {s: Decision(space.op, s, c.name, dict(c.resources), c.group) for s, c in choices.items()}
        if not tuned_sizes:
            self.echo(f"  {space.op}: the defaults are the fastest at every size; nothing to confirm")
            for d in decisions.values():
                d.verdict = "default is best"
            return sorted(decisions.values(), key=lambda d: d.size_bytes)
        env, why = tuned_env_for(space, list(decisions.values()), self.opts.out / "staging", self.context)
        if env is None:
            self.echo(f"  {space.op}: cannot confirm ({why})")
            for d in decisions.values():
                d.verdict = f"inconclusive: {why}"
                d.kept = False
            return sorted(decisions.values(), key=lambda d: d.size_bytes)
        tuned = Candidate("tuned", tuple(sorted(env.items())), "tuned")
        pairs: list[tuple[Sample, Sample]] = []
        for k in range(self.opts.confirm_pairs):
            first, second = (default, tuned) if k % 2 == 0 else (tuned, default)  # alternate the order too
            a = measure(first, k, "confirm")
            ledger.add(a)
            b = measure(second, k, "confirm")
            ledger.add(b)
            if not (a.ok and b.ok):
                bad = a if not a.ok else b
                if bad.candidate == "tuned":
                    for d in decisions.values():
                        if d.choice != DEFAULT:
                            d.verdict, d.kept = f"rejected: the tuned configuration failed ({bad.reason})", False
                    return sorted(decisions.values(), key=lambda d: d.size_bytes)
                raise DefaultFailed(f"the defaults failed during confirmation ({bad.reason})")
            pairs.append((a, b) if first is default else (b, a))
        for size, d in decisions.items():
            dflt = [p[0].times_us.get(size, math.nan) for p in pairs]
            tund = [p[1].times_us.get(size, math.nan) for p in pairs]
            ci = ratio_ci(dflt, tund)
            d.default_us, d.tuned_us = float(np.nanmedian(dflt)), float(np.nanmedian(tund))
            d.default_busbw = float(np.nanmedian([p[0].busbw_gbps.get(size, math.nan) for p in pairs]))
            d.tuned_busbw = float(np.nanmedian([p[1].busbw_gbps.get(size, math.nan) for p in pairs]))
            d.ci = ci
            if d.choice == DEFAULT:
                d.verdict, d.kept = "default is best", True
            elif ci.significant_gain:
                d.verdict, d.kept = "faster", True
            else:
                d.verdict, d.kept = ci.verdict if ci.verdict != "faster" else "no significant gain", False
        return sorted(decisions.values(), key=lambda d: d.size_bytes)


def run_tune(opts: TuneOptions, echo: Echo) -> list[OpResult]:
    """The whole session; raises UsageError when the plan does not fit the budget."""
    spec = opts.spec
    tuner = Tuner(opts, echo)
    opts.out.mkdir(parents=True, exist_ok=True)
    echo(f"fabricbench tune: {describe(spec)}; outputs in {opts.out}")
    # Calibration: the defaults of the first op price one run.
    baselines: dict[str, Sample] = {}
    first = spec.ops[0]
    cal = tuner._measure(RunSpec(**{**spec.__dict__, "ops": [first]}), first)
    default = Candidate(DEFAULT, (), DEFAULT, (), True)
    baselines[first] = cal(default, 0, "search")
    if not baselines[first].ok:
        raise DefaultFailed(f"the defaults failed ({baselines[first].status}: {baselines[first].reason}); "
                            f"see {baselines[first].run_dir}")
    run_json = _read_json(Path(baselines[first].run_dir) / "run.json")
    nranks = int(run_json.get("nranks") or spec.nprocs or 2)
    tuner.context.update(nranks=nranks, nnodes=len(run_json.get("hosts") or [1]), run_json=run_json)
    per_run = baselines[first].wall_s
    spaces = {op: make_space(opts, op, nranks) for op in spec.ops}
    nsizes = spec_sizes(spec)
    parts = {op: estimate_parts(s, opts, nsizes) for op, s in spaces.items()}
    planned = {op: sum(p.values()) for op, p in parts.items()}
    total_runs = sum(planned.values())
    estimate = total_runs * per_run
    mode = f"exhaustive ({opts.repeats} runs per candidate)" if opts.exhaustive else (
        "successive halving + resource stage (coordinate descent)" if opts.resources else
        "successive halving (resource stage off: --no-resources)")
    echo(f"plan: {mode}; {', '.join(f'{op}: {len(spaces[op].implementations)} candidates, <= {planned[op]} runs' for op in spec.ops)}; "
         f"{opts.confirm_pairs} interleaved default/tuned pairs confirm each op")
    for op, sp in spaces.items():
        if sp.axes and not opts.exhaustive:
            knobs_ = sorted({a for axes in sp.axes.values() for a in axes})
            debug = sorted(a for a in knobs_ if a in sp.resource_axes and sp.resource_axes[a].debug_only)
            echo(f"resource stage ({op}): coordinate descent over {', '.join(knobs_)} inside each of the "
                 f"{len(sp.axes)} subspaces that can win a size; about {parts[op]['resources']} runs "
                 f"(x {per_run:.1f} s = {parts[op]['resources'] * per_run / 60:.1f} min), stopped early if the budget would not hold"
                 + (f"; debug-only in NCCL's docs (measured and recorded, never written to nccl.env): {', '.join(debug)}"
                    if debug else ""))
    echo(f"estimated cost: {total_runs} runs x {per_run:.1f} s = {estimate / 60:.1f} min (budget {opts.budget_s / 60:.1f} min)"
         + "; " + ", ".join(f"{k} {sum(p[k] for p in parts.values())}" for k in ("search", "resources", "confirm")))
    if estimate > opts.budget_s:
        raise UsageError(f"the plan needs about {estimate / 60:.1f} min, more than --budget {opts.budget_s / 60:.1f} min; "
                         "raise --budget, tune fewer ops or sizes, or lower --confirm-pairs")
    if opts.plan_only:
        return []
    tuner.per_run = per_run
    results = []
    for i, op in enumerate(spec.ops):
        tuner.reserved_runs = 2 * opts.confirm_pairs + sum(planned[o] for o in spec.ops[i + 1:])
        if op not in baselines:
            baselines[op] = tuner._measure(RunSpec(**{**spec.__dict__, "ops": [op]}), op)(default, 0, "search")
        echo(f"{op}: searching {len(spaces[op].implementations)} candidates: "
             + ", ".join(c.name for c in spaces[op].implementations))
        result = tuner.tune_op(op, nranks, baselines[op])
        results.append(result)
        for d in result.decisions:
            echo(f"  {op} {d.size_bytes:>10d} B: {d.choice:32s} {d.summary()}")
    write_outputs(opts, results, tuner.context, echo)
    return results


def _noise(ledger: Ledger, name: str, sizes: list[int]) -> float:
    """Relative run-to-run spread of a candidate over the given sizes (median over sizes of (max-min)/median of
    its runs); at least MIN_GAIN, at most 25%. A resource step must beat the best so far by more than this."""
    spreads = []
    for size in sizes:
        ts = [s.times_us[size] for s in ledger.ok_samples(name) if size in s.times_us]
        if len(ts) >= 2 and np.median(ts) > 0:
            spreads.append((max(ts) - min(ts)) / float(np.median(ts)))
    return float(min(0.25, max(MIN_GAIN, np.median(spreads) if spreads else MIN_GAIN)))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}

