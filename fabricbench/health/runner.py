"""One health run: plan within the budget, sweep (Slurm or --local, through `fabricbench sweep pairwise`), then
collectives over subsets in what is left of the budget (fabricbench.health.collectives), analyze, append to the
history, update states, drain/resume through the lifecycle, write the .prom file.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from fabricbench.errors import UsageError
from fabricbench.health import history as hist
from fabricbench.health import collectives as coll
from fabricbench.health import lifecycle, report, rows, states
from fabricbench.health.plan import make_plan

DEFAULT_ROUND_S = 10.0
DEFAULT_OVERHEAD_S = 15.0


@dataclass
class RunOptions:
    nodes: list[str]
    budget_s: float
    history: str = hist.DEFAULT_DIR
    local: bool = False
    topology: str | None = None
    gpus_per_node: int = 0
    sizes: tuple[str, str] = ("1M", "1M")
    iters: int = 5
    warmup: int = 1
    partition: str | None = None
    per_rail: bool = False
    hca: str | None = None
    textfile: str | None = None
    drain: bool = False
    dry_run: bool = False
    confirm_k: int = 2
    confirm_m: int = 3
    round_s: float | None = None
    overhead_s: float | None = None
    out: str | None = None
    collectives: bool | None = None  # None: when the budget allows after the sweep; True: reserve time for them
    collective_size: str = coll.DEFAULT_SIZE
    params: states.Params = field(default_factory=states.Params)
    verify_tuning: list[str] = field(default_factory=list)  # tuning directories to `tune verify` after the sweep
    verify_pairs: int = 3
    verify_fn: object = None  # tests: stands in for fabricbench.tune.verify.verify
    echo: object = print


def _estimates(directory, opts: RunOptions) -> tuple[float, float, str]:
    """Seconds per round and fixed seconds: given, else from the last runs' own measurement, else defaults."""
    if opts.round_s and opts.overhead_s is not None:
        return opts.round_s, opts.overhead_s, "given"
    past = [r for r in hist.runs(directory) if r.get("sweep_s") and r.get("rounds")]
    if past:
        per = sorted(r["sweep_s"] / r["rounds"] for r in past[-5:])[len(past[-5:]) // 2]
        return opts.round_s or per, opts.overhead_s if opts.overhead_s is not None else 0.0, \
            f"median of the last {len(past[-5:])} run(s)"
    return opts.round_s or DEFAULT_ROUND_S, opts.overhead_s if opts.overhead_s is not None else DEFAULT_OVERHEAD_S, \
        "defaults (no history yet)"


def _history_view(directory) -> tuple[set, list[str]]:
    """Pairs met in the last 90 runs (the rotation prefers the others) and yesterday's suspect nodes."""
    con = hist.connect(directory)
    met = con.execute("SELECT DISTINCT node, partner FROM measurements WHERE component_kind = 'pair' AND run_ts >= "
                      "(SELECT min(run_ts) FROM (SELECT DISTINCT run_ts FROM measurements ORDER BY run_ts DESC LIMIT 90))"
                      ).fetchall()
    sus = con.execute("SELECT DISTINCT node FROM states WHERE run_ts = (SELECT max(run_ts) FROM states) AND "
                      "component_kind IN ('nic', 'node') AND state IN ('suspect', 'regressed', 'flapping', 'failed')"
                      ).fetchall()
    return {tuple(sorted(p)) for p in met if p[0] and p[1]}, [s[0] for s in sus if s[0]]


def _sweep_argv(opts: RunOptions, plan, out: Path, reservation: str | None) -> list[str]:
    argv = [sys.executable, "-m", "fabricbench", "sweep", "pairwise", "--out", str(out), "-q",
            "-b", opts.sizes[0], "-e", opts.sizes[1], "-n", str(opts.iters), "-w", str(opts.warmup),
            "--pattern", plan.pattern, "--seed", str(plan.seed)]
    if plan.pattern == "rotation":
        argv += ["--partners", str(plan.partners)]
    if opts.per_rail:  # rank k of each node tests NIC (rail) k: one series per rail (component '<node>/nic<k>')
        argv += ["--per-rail", "--ntasks-per-node", str(max(opts.gpus_per_node, 1))]
        if not opts.local:
            argv += ["--gpus-per-node", str(max(opts.gpus_per_node, 1))]
        if opts.hca:
            argv += ["--hca", opts.hca]
    if opts.local:
        argv += ["--local", "--nodes", str(len(plan.nodes))]
    else:
        argv += ["--nodelist", ",".join(plan.nodes)]
        if opts.partition:
            argv += ["-p", opts.partition]
        if reservation:
            argv += ["--reservation", reservation]
    return argv


def _scontrol(argv: list[str], echo, apply: bool) -> bool:
    from fabricbench.slurm.nodes import shell_line

    echo(shell_line(argv))
    if not apply:
        return True
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        echo(f"# failed: {' '.join((proc.stderr or proc.stdout).split())[:200]}")
    return proc.returncode == 0


def record_node_report(report, history: str | None, textfile: str | None) -> None:
    ts = datetime.now(timezone.utc)
    run_id = hist.new_run_id(ts) + f"-{report.node}"
    data = rows.from_node_report(report, run_id, ts)
    if history:
        hist.append_measurements(history, run_id, "check", data)
        hist.write_run(history, run_id, {"run_id": run_id, "run_ts": ts.isoformat(), "kind": "node-check",
                                         "node": report.node, "status": report.status, "seconds": report.seconds})
    if textfile:
        from fabricbench.health import prom

        prom.write(textfile, pd.DataFrame(), pd.DataFrame(data), time.time(), report.seconds)


def run(opts: RunOptions) -> int:
    echo = opts.echo
    t_start = time.time()
    ts = datetime.now(timezone.utc)
    run_id = hist.new_run_id(ts)
    directory = opts.history
    nodes = list(opts.nodes)
    if opts.local:
        nodes = [f"node{i}" for i in range(len(nodes))]
    # Nodes we drained for the fabric get their retest in this sweep (inside a maintenance reservation).
    retest = [] if opts.local else lifecycle.drained_by_us(nodes, lifecycle.FABRIC_TAG)
    if not opts.local:
        nodes, skipped = lifecycle.in_service(nodes, retest)
        for node, why in skipped:
            echo(f"# not swept: {node} {why}")
    round_s, overhead_s, how = _estimates(directory, opts)
    met, suspects = _history_view(directory)
    prior = hist.runs(directory)
    fabric = None
    if opts.topology:
        from fabricbench.analyze.topo_adapter import load_fabric

        fabric = load_fabric(opts.topology)
    leaf_of = (fabric.leaf_of or None) if fabric else None
    subsets = []
    if opts.collectives is not False:
        subsets = coll.choose_subsets(nodes, leaf_of, night=sum(1 for r in prior if r.get("kind") == "sweep"))
    coll_from = coll.estimates(prior, subsets)
    sweep_budget = opts.budget_s
    if opts.collectives and subsets:  # asked for: the subsets that fit beside one sweep round come out of its time
        sweep_budget = opts.budget_s - coll.fit(subsets, opts.budget_s - overhead_s - round_s, not opts.local).est_s
    plan = make_plan(nodes, sweep_budget, round_s, overhead_s, opts.gpus_per_node, met,
                     sorted(set(suspects) | set(retest)), night=len(prior))
    echo(plan.describe())
    echo(f"estimates from: {how}")
    cplan = None
    if opts.collectives is False:
        echo("collectives: off (--no-collectives)")
    else:
        cplan = coll.fit(subsets, opts.budget_s - plan.est_wall_s, not opts.local, size=opts.collective_size,
                         estimates_from=coll_from)
        echo(cplan.describe())
        echo(f"total estimate: {plan.est_wall_s + cplan.est_s:.0f} s of the {opts.budget_s:.0f} s budget")
    if retest:
        echo(f"retest of nodes fabricbench drained: {', '.join(retest)}")
    out = Path(opts.out or Path("results") / "health" / run_id).absolute()
    reservation = None
    apply = not opts.dry_run
    if retest:
        reservation = f"fabricbench-health-{run_id[:15]}"
        minutes = max(5, int((plan.est_wall_s + (cplan.est_s if cplan else 0)) * 3 / 60) + 5)
        _scontrol(["scontrol", "create", "reservation", f"ReservationName={reservation}", f"Nodes={','.join(nodes)}",
                   "StartTime=now", f"Duration={minutes}", f"Users={getpass.getuser()}", "Flags=MAINT,IGNORE_JOBS"],
                  echo, apply)
        for node in retest:
            lifecycle.resume(node, lifecycle.FABRIC_TAG, apply=apply, echo=echo)
    argv = _sweep_argv(opts, plan, out, reservation)
    launch = coll.Launch(local=opts.local, gpus_per_node=opts.gpus_per_node, size=opts.collective_size,
                         iters=opts.iters, warmup=opts.warmup, partition=opts.partition, reservation=reservation)
    if opts.dry_run:
        from fabricbench.slurm.nodes import shell_line

        echo(shell_line(argv))
        for s in cplan.subsets if cplan else []:
            echo(shell_line(coll.argv_for(s, launch, out / "collectives" / s.dirname, opts.budget_s)))
        for d in opts.verify_tuning:
            echo(shell_line([sys.executable, "-m", "fabricbench", "tune", "verify", d, "--confirm-pairs",
                             str(opts.verify_pairs)]) + "   # after the sweep, if the budget allows")
        return 0
    t_sweep = time.time()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ))
    finally:
        sweep_s = time.time() - t_sweep
    if proc.returncode not in (0, 1):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        if reservation:
            _scontrol(["scontrol", "delete", f"ReservationName={reservation}"], echo, apply)
        raise UsageError(f"the sweep failed (exit {proc.returncode}): {tail[0][:200]}; results in {out}")
    cresults: list = []
    coll_s = 0.0
    if cplan is not None and subsets:
        left = opts.budget_s - (time.time() - t_start)
        refit = coll.fit(subsets, left, not opts.local, size=opts.collective_size, estimates_from=coll_from)
        dropped = [s.name for s in cplan.subsets if s not in refit.subsets]
        if dropped:
            echo(f"collectives: {left:.0f} s of the budget left after the sweep; left out now: {', '.join(dropped)}")
        cplan = refit
        t_coll = time.time()
        cresults = coll.execute(cplan, launch, out / "collectives", t_start + opts.budget_s, echo)
        coll_s = time.time() - t_coll
        coll.judge(cresults, fabric, opts.gpus_per_node)
    # Measurements into the history first: whatever happens next, they are kept.
    data = rows.from_sweep(out, run_id, ts, leaf_of)
    hist.append_measurements(directory, run_id, "sweep", data)
    crows = coll.rows(cresults, run_id, ts)
    hist.append_measurements(directory, run_id, "collective", crows)
    verdicts, status = _analyze(out, fabric)
    con = hist.connect(directory)
    series = states.load_series(con)
    st = states.compute(series, opts.params)
    hist.write_states(directory, run_id, _state_table(st, run_id, ts))
    actions = _lifecycle(opts, st, con, nodes, retest, run_id, apply)
    if reservation:
        _scontrol(["scontrol", "delete", f"ReservationName={reservation}"], echo, apply)
    tunings = []
    if opts.verify_tuning:
        from fabricbench.health import tuning

        tunings = tuning.verify_tunings(opts.verify_tuning, opts.budget_s - (time.time() - t_start),
                                        opts.verify_pairs, echo, opts.verify_fn)
        hist.append_measurements(directory, run_id, "tuning", tuning.history_rows(tunings, run_id, ts))
    spent = time.time() - t_start
    meta = {"run_id": run_id, "run_ts": ts.isoformat(), "kind": "sweep", "nodes": nodes, "plan": {
        "pattern": plan.pattern, "partners": plan.partners, "seed": plan.seed, "pairs": len(plan.pairs),
        "est_wall_s": plan.est_wall_s, "gpu_hours": plan.gpu_hours}, "rounds": plan.rounds, "sweep_s": sweep_s,
        "spent_s": spent, "spent_gpu_hours": len(nodes) * opts.gpus_per_node * spent / 3600, "results": str(out),
        "analyze": {"status": status, "verdicts": verdicts}, "actions": actions, "budget_s": opts.budget_s,
        "collectives": {"op": coll.OP, "size": opts.collective_size, "mode": {None: "auto", True: "on", False: "off"}[
            opts.collectives], "est_s": cplan.est_s if cplan else 0.0, "spent_s": coll_s,
            "planned": [s.name for s in cplan.subsets] if cplan else [],
            "left_out": [s.name for s in cplan.left_out] if cplan else [],
            "results": [r.as_dict() for r in cresults]},
        "verify_tuning": tunings}
    hist.write_run(directory, run_id, meta)
    if opts.textfile:
        from fabricbench.health import prom

        prom.write(opts.textfile, st, pd.DataFrame(data + crows), time.time(), spent, tunings)
    bad = st[~st["state"].isin(["ok", "new"])] if not st.empty else st
    for line in coll.summary_lines(cresults):
        echo(line)
    if cplan is not None and subsets:
        echo(f"collectives: spent {coll_s:.0f} s on {len(cresults)} subset(s) (estimate {cplan.est_s:.0f} s)"
             + (f"; left out: {', '.join(s.name for s in cplan.left_out)}" if cplan.left_out else ""))
    echo(f"spent: {spent:.0f} s wall (sweep {sweep_s:.0f} s; estimate {plan.est_wall_s:.0f} s), "
         f"{meta['spent_gpu_hours']:.3f} GPU-hours; budget {opts.budget_s:.0f} s")
    echo(f"analyze: {status}; {len(verdicts)} verdict(s)" + "".join(f"\n  {v['summary']}" for v in verdicts[:8]))
    for line in report.state_lines(bad, limit=40):
        echo(line)
    for a in actions:
        echo(f"{a['action']:12s} {a['node']}: {a['why']}")
    code = report.exit_code_of(st, runs=1)
    if tunings:
        from fabricbench.health import tuning

        for t in tunings:
            echo(f"tuning {t['tuning']}: {t['status']}" + (f" ({t['why']})" if t["why"] else ""))
        new = tuning.exit_code(code, tunings)
        if new != code:
            echo(f"exit {new}: " + ("a tuning's claimed gain is gone (re-run fabricbench tune)" if new == tuning.GONE_EXIT
                                    else "a tuning could not be verified"))
        code = new
    return code


def _analyze(out: Path, fabric) -> tuple[list[dict], str]:
    from fabricbench.analyze.analysis import analyze
    from fabricbench.analyze.importers import load_all

    try:
        res = analyze(load_all([str(out)]), fabric)
    except UsageError as err:
        return [], f"not analyzed: {err}"
    return [{"component": v.component, "kind": v.kind, "confidence": round(v.confidence, 3), "summary": v.summary,
             "hosts": v.hosts} for v in res.faults()], res.status


def _state_table(st: pd.DataFrame, run_id: str, ts) -> pd.DataFrame:
    st = st.copy()
    st["schema_version"] = hist.SCHEMA_VERSION
    st["run_id"] = run_id
    st["run_ts"] = pd.Timestamp(ts)
    for c in ("first_seen_ts", "last_good_ts"):
        st[c] = pd.to_datetime(st[c], utc=True)
    import pyarrow as pa

    return pa.Table.from_pandas(st[[f.name for f in hist.STATE_SCHEMA]], schema=hist.STATE_SCHEMA, preserve_index=False)


def _lifecycle(opts: RunOptions, st: pd.DataFrame, con, nodes: list[str], retest: list[str], run_id: str,
               apply: bool) -> list[dict]:
    echo = opts.echo
    actions = []
    if st.empty:
        return actions
    nic = st[st["component_kind"] == "nic"]
    low_now = set(nic[nic["state"].isin(["suspect", "regressed", "flapping"])]["node"])
    last_runs = [r[0] for r in con.execute("SELECT DISTINCT run_id, run_ts FROM measurements WHERE source = 'sweep' "
                                           f"ORDER BY run_ts DESC LIMIT {int(opts.confirm_m)}").fetchall()]
    pairs = con.execute("SELECT run_id, node, partner, value FROM measurements WHERE component_kind = 'pair' AND "
                        f"run_id IN ({', '.join(repr(r) for r in last_runs) or 'NULL'})").df()
    for node in sorted(set(retest)):  # resumed for the retest above: drain again if it still reads low
        if node in low_now:
            why = f"retest failed: NIC still low in {run_id}"
            if opts.drain:
                o = lifecycle.drain_fabric(node, why, apply=apply, echo=echo, measured=set(nodes))
                actions.append({"node": node, "action": o.action, "why": o.why})
        else:
            actions.append({"node": node, "action": "resumed" if apply else "would-resume",
                            "why": f"retest passed in {run_id} (every NIC reading within its baseline)"})
    for node in sorted(low_now - set(retest)):
        conf = lifecycle.confirmations(pairs, node, last_runs, opts.params.drop)
        rows_ = nic[nic["node"] == node]
        worst = rows_.sort_values("drop", ascending=False).iloc[0]
        why = (f"NIC {worst['component']} {worst['metric'].split('_')[0]} {100 * worst['drop']:.0f}% below its "
               f"baseline since {worst['first_seen_run']}; {conf.detail}")
        if lifecycle.should_drain(conf, opts.confirm_k):
            if opts.drain:
                o = lifecycle.drain_fabric(node, why, apply=apply, echo=echo, measured=set(nodes))
                actions.append({"node": node, "action": o.action, "why": o.why if o.action == "skipped" else why})
            else:
                actions.append({"node": node, "action": "would-drain", "why": why + " (no --drain)"})
        else:
            actions.append({"node": node, "action": "watch", "why": why + f"; drains at {opts.confirm_k} of "
                            f"{opts.confirm_m} runs with >= {opts.confirm_k} partners"})
    return actions
