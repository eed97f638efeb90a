"""Results of a finished job into the results format, and what is missing, node by node, with the reason.

- Collective runs (`submit`): the ranks wrote results.parquet/run.json themselves (rank 0, on the shared
  directory); here the allocated nodes are compared with the hosts that reported, and a missing node is named
  with the last error from its rank's log (or "no log": the rank never started).
- Sweeps: the ranks wrote JSON lines; here they become one row per (round, node_a, node_b, direction, size),
  row_kind 'pair', and every scheduled pair/direction/size that has no measurement becomes a failed row whose
  `error` says why (the pair's own failure report, or why its node stopped).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from fabricbench.errors import RunFailed, UsageError
from fabricbench.slurm.fabric_map import round_sharing
from fabricbench.slurm.planning import load_records, plan_path
from fabricbench.slurm.sweep import DIRECTIONS, Plan

# What run.json and the rows spell out of who ran with whom: everything on small sweeps; at scale the `round`,
# `leaf_a`, `leaf_b` and `uplink_pairs` columns carry the same facts without millions of names.
ROUNDS_IN_RUN_JSON = 20_000  # pairs: above this, run.json's `rounds` list is left empty
SHARED_WITH_NAMES = 8  # a row names at most this many other pairs on its uplinks (else None)
JOB_FILE = "job.json"  # written by submit: job id, script, requested nodes
NODES_FILE = "job-nodes.txt"  # written by the batch script: $SLURM_JOB_NODELIST


def _last_error(log: Path) -> str | None:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    # torch's own warnings ('[W1128 08:35:27 socket.cpp:207] ...') say nothing about why a rank stopped
    lines = [ln for ln in lines if not re.match(r"^\[[WI]\d{4} ", ln)]
    for line in reversed(lines):
        if line.startswith("fabricbench: error:"):
            return line.removeprefix("fabricbench: error:").strip()
    for line in reversed(lines):
        if line.startswith(("fabricbench:", "srun:", "slurmstepd:")) or "Error" in line:
            return line[:300]
    return lines[-1][:300] if lines else None


def _short(host: str) -> str:
    return host.split(".")[0]


def allocated_nodes(out: Path) -> list[str] | None:
    path = out / NODES_FILE
    if not path.exists():
        return None
    from fabricbench.slurm.templates import expand_nodes

    text = path.read_text().strip()
    return expand_nodes(text, NODES_FILE) if text else None


def missing_nodes(out: Path, expected: list[str], reported: list[str], log_glob: str = "rank*-{node}.log",
                  step_status: dict | None = None) -> dict[str, str]:
    """{node: why} for every expected node that did not report."""
    seen = {_short(h) for h in reported}
    why: dict[str, str] = {}
    for node in expected:
        if _short(node) in seen:
            continue
        logs = sorted((out / "logs").glob(log_glob.format(node=node)))
        status = [s for s in (step_status or {}).values() if s.get("node") == node and s.get("why") != "ok"]
        if status:
            why[node] = status[0]["why"] + (f"; last log line: {_last_error(logs[0])}" if logs and
                                            _last_error(logs[0]) else "")
        elif not logs:
            why[node] = "no rank ran there (no log file: the step never started on this node)"
        else:
            detail = _last_error(logs[0])
            why[node] = f"its rank stopped without results: {detail}" if detail else "its rank wrote an empty log"
    return why


# -- collective runs ------------------------------------------------------------------------------------------
_NODE_FAIL = re.compile(r"^srun: error: Node failure on (?P<nodes>\S+)$")
_SRUN_ERROR = re.compile(r"^srun: error: (?P<node>[^:\s]+): tasks? (?P<tasks>[0-9,\-]+): (?P<why>.+)$")


def srun_reports(out: Path) -> dict[str, str]:
    """{node: what srun said about its task(s)} from the batch script's output (slurm-<jobid>.out)."""
    found: dict[str, str] = {}
    for path in sorted(out.glob("slurm-*.out")):
        for line in path.read_text(errors="replace").splitlines():
            m = _SRUN_ERROR.match(line.strip())
            if m:
                found.setdefault(m.group("node"), f"task {m.group('tasks')}: {m.group('why').strip()}")
            m = _NODE_FAIL.match(line.strip())
            if m:
                from fabricbench.slurm.templates import expand_nodes

                for node in expand_nodes(m.group("nodes")):
                    found.setdefault(node, "Slurm reported a node failure")
    return found


def step_failure(out: Path) -> str | None:
    """The first rank srun reported as failed (srun prints them in the order it saw them), with its node and the
    last error from its own log: 'rank 2 on lab3: Killed (...)'. None when srun reported nothing."""
    lines: list[str] = []
    for path in sorted(out.glob("slurm-*.out")):
        lines += path.read_text(errors="replace").splitlines()
    for line in lines:
        m = _SRUN_ERROR.match(line.strip())
        if not m:
            continue
        node, tasks, why = m.group("node"), m.group("tasks"), m.group("why").strip()
        first = tasks.split(",")[0].split("-")[0]
        log = next(iter(sorted((out / "logs").glob(f"rank{first}-{node}.log"))), None)
        detail = _last_error(log) if log else None
        text = f"rank {tasks} on node {node}: {why}"
        if detail:
            text += f" ({detail})"
        return text + "; srun stopped the other ranks (--kill-on-bad-exit)"
    return None


def stuck_rank(out: Path) -> str | None:
    """From the ranks' heartbeats (<out>/.progress, shared): the rank(s) behind the others, when some are.
    A hung rank is what makes its peers time out: srun reports the peer that gave up first, not the culprit."""
    progress = out / ".progress"
    try:
        nranks = int(json.loads((out / JOB_FILE).read_text()).get("ranks") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        nranks = 0
    if not progress.is_dir() or not any(progress.glob("rank*")):
        return None
    from fabricbench.launch.local import _stuck_ranks

    report = _stuck_ranks(progress, nranks)
    return report if report.startswith("stuck:") or "never reported" in report else None


def collect_run(out: Path, job_state=None, quiet: bool = False, echo=print) -> int:
    """Print the run's table and check that every allocated node reported. Returns the exit code."""
    run_file = out / "run.json"
    expected = allocated_nodes(out)
    failure = step_failure(out)
    stuck = stuck_rank(out) if failure or (job_state is not None and job_state.ok is False) else None
    if stuck and failure:
        failure = f"{stuck}; then {failure}"
    if not run_file.exists() and failure:
        raise RunFailed(f"no results reached {out}: {failure}")
    if not run_file.exists():
        reason = f"job {job_state.job_id} ended {job_state.state}" if job_state else "the job wrote no run.json"
        if expected:
            lost = missing_nodes(out, expected, [])
            details = "; ".join(f"{n}: {w}" for n, w in lost.items())
            raise RunFailed(f"{reason} and no results reached {out}: {details}")
        raise RunFailed(f"{reason} and no results reached {out} (see {out / 'logs'} and the slurm-*.out file)")
    info = _run_json(run_file)
    if not quiet:
        table = sorted((out / "logs").glob("rank0-*.out"))
        if table and table[0].stat().st_size:
            echo(table[0].read_text().rstrip("\n"))
        else:
            _print_from_results(out, echo)
    code = 0
    if info.get("status") in (None, "running") and (failure or (job_state is not None and job_state.ok is False)):
        from fabricbench.engine.driver import finalize_failed_run

        message = failure or f"job {job_state.job_id} ended {job_state.state} (exit {job_state.exit_code})"
        finalize_failed_run(out, message)  # run.json says why, as after a failed local run
        info = _run_json(run_file)
    hosts = info.get("hosts") or [r.get("host") for r in info.get("ranks", [])]
    if expected:
        lost = missing_nodes(out, expected, hosts)
        if lost:
            for node, why in lost.items():
                echo(f"# MISSING node {node}: {why}")
            code = 1
        elif not quiet and info.get("status") == "ok":
            echo(f"# nodes: {len(set(map(_short, hosts)))} of {len(expected)} allocated reported results")
    if info.get("status") not in ("ok",):
        echo(f"# run status: {info.get('status')}: {info.get('error') or ''}".rstrip(": "))
        stuck = stuck or stuck_rank(out)
        if stuck and stuck not in str(info.get("error") or ""):
            echo(f"# hung: {stuck}")
        code = 1
    if job_state is not None and job_state.ok is False and code == 0:
        echo(f"# job {job_state.job_id} ended {job_state.state} (exit {job_state.exit_code})")
        code = 1
    return code


def _run_json(path: Path) -> dict:
    from fabricbench import limits

    doc = limits.load_json(path, "run.json")
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: not a fabricbench run.json (expected a JSON object); restore it or re-run")
    return doc


def _print_from_results(out: Path, echo) -> None:
    from fabricbench.engine.report import TablePrinter
    from fabricbench.results import read_results

    frame = read_results(out)
    rows = frame[frame["row_kind"] == "op"]

    class _Echo:
        def write(self, text):
            if text.strip("\n"):
                echo(text.rstrip("\n"))

        def flush(self):
            pass

    printer = TablePrinter(stream=_Echo())
    for op, part in rows.groupby("op", sort=False):
        printer.op_header(str(op), f"{part['nranks'].iloc[0]} ranks, {part['nnodes'].iloc[0]} nodes")
        records = part.to_dict("records")
        for r in records:
            printer.row(r)
        printer.op_footer(records)


# -- sweeps ---------------------------------------------------------------------------------------------------
def _step_status(out: Path, phase: str) -> dict:
    path = out / "steps" / f"{phase}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def node_reasons(out: Path, plan: Plan, records: list[dict]) -> dict[tuple[str, int], str]:
    """(node, rail) -> why it did not finish the step, for every rank without a 'done' record."""
    done = {(r["node"], r.get("rail", 0)) for r in records if r.get("kind") == "done" and r["phase"] == plan.phase}
    started = {(r["node"], r.get("rail", 0)) for r in records if r.get("kind") == "start" and r["phase"] == plan.phase}
    fatal = {(r["node"], r.get("rail", 0)): r["error"] for r in records if r.get("kind") == "fatal"
             and r["phase"] == plan.phase}
    status = _step_status(out, plan.phase)
    srun_said = srun_reports(out)
    prefix = "" if plan.phase == "sweep" else f"{plan.phase}-"
    why: dict[tuple[str, int], str] = {}
    for i, node in enumerate(plan.nodes):
        for rail in range(plan.tasks_per_node):
            key = (node, rail)
            if key in done:
                continue
            rank = i * plan.tasks_per_node + rail
            st = status.get(str(rank))
            logs = sorted((out / "logs").glob(f"{prefix}rank*-{node}.log"))
            if plan.tasks_per_node > 1:
                logs = [p for p in logs if p.name.startswith(f"{prefix}rank{rank}-")] or logs
            last = _last_error(logs[0]) if logs else None
            if key in fatal:
                text = fatal[key]
            elif st and st.get("why") != "ok":
                text = st["why"]
            elif key not in started:
                text = "its rank never started (no record" + (", no log)" if not logs else ")")
            else:
                text = "its rank stopped mid-sweep (no 'done' record; the node died or was killed)"
            if node in srun_said:
                text += f"; srun: {srun_said[node]}"
            if last and "injected" not in text and last not in text:
                text += f"; last log line: {last}"
            why[key] = text
    return why


def sweep_frame(out: Path):
    """(DataFrame of pair rows, summary dict) from the plan(s) and records in `out`."""
    import pandas as pd

    from fabricbench.results import to_frame

    plans = [Plan.load(p) for p in (plan_path(out, "sweep"), plan_path(out, "retest")) if p.exists()]
    if not plans:
        raise UsageError(f"{out}: no plan.json here (not a sweep results directory, or the job never started)")
    records = load_records(out)
    rows: list[dict] = []
    summary: dict = {"failed_pairs": [], "nodes_missing": {}, "pairs": 0, "pairs_failed": 0, "rounds": [],
                     "node_hosts": {}}
    for plan in plans:
        recs = [r for r in records if r.get("phase") == plan.phase]
        reasons = node_reasons(out, plan, recs)
        for (node, rail), text in reasons.items():
            label = node if plan.tasks_per_node == 1 else f"{node} rail {rail}"
            summary["nodes_missing"].setdefault(label, f"{plan.phase}: {text}")
        measured: dict[tuple, dict] = {}
        for r in recs:
            if r.get("kind") == "row":
                key = (r["round"], r["node_a"], r["node_b"], r.get("rail", 0), r["direction"], r["size_bytes"])
                measured.setdefault(key, r)
        failures: dict[tuple, list[str]] = defaultdict(list)
        for r in recs:
            if r.get("kind") == "pair_failed":
                failures[(r["round"], r["node_a"], r["node_b"], r.get("rail", 0))].append(f"{r['node']}: {r['error']}")
        hosts = {(r["node"], r.get("rail", 0)): r.get("host") for r in recs if r.get("kind") == "start"}
        for (node, rail), host in hosts.items():
            summary["node_hosts"].setdefault(node, host)
        fabric = plan.extra.get("fabric") or {}
        leaves = fabric.get("leaves") or [None] * len(plan.nodes)
        for rnd in plan.rounds:
            pairs = [tuple(p) for p in rnd["pairs"]]
            sharing = round_sharing(pairs, leaves)
            if plan.pair_count() <= ROUNDS_IN_RUN_JSON:
                summary["rounds"].append({
                    "phase": plan.phase, "round": rnd["round"], "repeat": rnd.get("repeat", 0),
                    "pairs": [[plan.nodes[x] for x in p] for p in pairs],
                    "uplinks": {leaf: [[plan.nodes[x] for x in p] for p in pairs if leaf in sharing[p]["uplinks"]]
                                for leaf in sorted({l for p in pairs for l in sharing[p]["uplinks"]})}})
            for a_i, b_i in rnd["pairs"]:
                a, b = plan.nodes[a_i], plan.nodes[b_i]
                share = sharing[(a_i, b_i)]
                where = dict(round_pairs=len(pairs), leaf_a=leaves[a_i], leaf_b=leaves[b_i],
                             uplink_pairs=share["uplink_pairs"] if fabric else None,
                             uplink_shared_with=";".join(f"{plan.nodes[x]}-{plan.nodes[y]}"
                                                         for x, y in share["shared_with"])
                             if fabric and len(share["shared_with"]) <= SHARED_WITH_NAMES else None)
                for rail in range(plan.tasks_per_node):
                    summary["pairs"] += 1
                    pair_failed = False
                    for size in plan.sizes:
                        for direction in DIRECTIONS:
                            key = (rnd["round"], a, b, rail, direction, size)
                            timer = b if direction == "b->a" else a
                            base = dict(row_kind="pair", run_id=plan.run_id, round=rnd["round"], node_a=a,
                                        node_b=b, direction=direction, size_bytes=size, count=size // 4,
                                        dtype="float", redop="none", root=-1, placement="out-of-place",
                                        timing="aggregate", time_reduce="rank0", nranks=2,
                                        nnodes=len({hosts.get((a, rail)), hosts.get((b, rail))} - {None}) or 2,
                                        group=rail, iters=plan.iters, warmup=plan.warmup, check_iters=0,
                                        op="pingpong" if direction == "pingpong" else "p2p_uni",
                                        backend=plan.backend, device="cuda" if plan.backend == "nccl" else "cpu",
                                        local_rank=rail, repeat=rnd.get("repeat", 0), phase=plan.phase, rail=rail,
                                        nic=plan.hcas[rail % len(plan.hcas)] if plan.hcas else None, **where)
                            r = measured.get(key)
                            if r is not None:
                                t = r["time_us"]
                                rows.append(dict(base, status="ok", iters=r.get("iters", plan.iters),
                                                 time_us=t, time_max_us=t, time_min_us=t,
                                                 min_us=t, algbw_gbps=r["algbw_gbps"], busbw_gbps=r["algbw_gbps"],
                                                 latency_us=r.get("latency_us"), nwrong=0, host=r.get("host"),
                                                 rank=r.get("rank"), t_start_ns=r.get("t_start_ns"),
                                                 t_end_ns=r.get("t_end_ns")))
                                continue
                            pair_failed = True
                            err = failures.get((rnd["round"], a, b, rail))
                            if err:
                                text = "; ".join(sorted(set(err)))
                            else:
                                gone = [f"{n} {reasons[(n, rail)]}" for n in (a, b) if (n, rail) in reasons]
                                text = ("; ".join(gone) if gone else
                                        "not measured: neither node reported this pair")
                            rows.append(dict(base, status="failed", error=text, host=hosts.get((timer, rail))))
                    if pair_failed:
                        summary["pairs_failed"] += 1
                        why = next((r["error"] for r in reversed(rows) if r.get("status") == "failed"
                                    and r["node_a"] == a and r["node_b"] == b and r["round"] == rnd["round"]), "")
                        summary["failed_pairs"].append({"round": rnd["round"], "node_a": a, "node_b": b,
                                                        "rail": rail, "phase": plan.phase, "error": why})
    summary["plans"] = [{"phase": p.phase, "rounds": len(p.rounds), "pairs": p.pair_count()} for p in plans]
    summary["plan"] = plans[0]
    frame = to_frame(pd.DataFrame(rows)) if rows else to_frame([])
    return frame, summary


def _json_object(path: Path) -> dict:
    """A JSON object file of the sweep directory (sweep.json, job.json), or UsageError naming it."""
    from fabricbench import limits

    doc = limits.load_json(path, "sweep file")
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise UsageError(f"{path}: not a fabricbench sweep file (expected a JSON object); restore it or re-run")
    return doc


def collect_sweep(out: Path, quiet: bool = False, echo=print, command_line: list[str] | None = None,
                  started: str | None = None) -> int:
    """Write results.parquet + run.json for a sweep directory, print the table; exit 1 when pairs failed."""
    from fabricbench.engine.provenance import now_iso
    from fabricbench.results import write_results

    frame, summary = sweep_frame(out)
    plan: Plan = summary.pop("plan")
    meta_path = out / "sweep.json"
    meta = _json_object(meta_path) if meta_path.exists() else {}
    info = {
        "run_id": plan.run_id, "kind": "pairwise-sweep",
        "status": "ok" if summary["pairs_failed"] == 0 else "failed",
        "error": (f"{summary['pairs_failed']} of {summary['pairs']} pairs failed" if summary["pairs_failed"]
                  else None),
        "command_line": command_line or meta.get("command_line"), "config": meta.get("config"),
        "backend": plan.backend, "device": "cuda" if plan.backend == "nccl" else "cpu",
        "nodes": plan.nodes, "tasks_per_node": plan.tasks_per_node, "hcas": plan.hcas,
        # the hosts of this run are its nodes (the names in node_a/node_b), never the launching machine: with
        # --local every "node" is a process on the launcher, whose host name is in `launcher`
        "hosts": list(plan.nodes), "launcher": {"host": meta.get("launcher_host"), "local": plan.local},
        "fabric": plan.extra.get("fabric"),
        "sizes": plan.sizes, "iters": plan.iters, "warmup": plan.warmup, "measure_target_s": plan.measure_target_s,
        "start_time": started or meta.get("start_time"), "end_time": now_iso(), **summary,
    }
    info["out_dir"] = str(out)
    if meta.get("job_id"):
        info["job_id"] = meta["job_id"]
    write_results(out, frame, info)
    if not quiet:
        print_sweep(frame, info, echo)
    return 0 if summary["pairs_failed"] == 0 else 1


def analyzer_suspects(out: str | os.PathLike) -> list[tuple[str, str]] | None:
    """The sweep's paths that `fabricbench analyze` blames or cannot clear, most suspect first: what a retest
    should run again. It judges each path against what its ends and its round's contention explain, where the
    raw rule (below a fraction of the median) on an oversubscribed fabric picks mostly collisions. The sweep's
    results are written first (kept even if the retest fails). None where they cannot be analyzed."""
    from fabricbench.analyze.analysis import analyze
    from fabricbench.analyze.importers import load

    try:
        collect_sweep(Path(out), quiet=True)
        res = analyze(load(Path(out)))
    except Exception as err:  # the retest falls back to the raw rule; the sweep's results stay as measured
        print(f"fabricbench: retest chosen by the raw rule: the sweep could not be analyzed ({type(err).__name__}: "
              f"{' '.join(str(err).split())[:200]})", file=sys.stderr)
        return None
    return res.retest_paths()


def node_summary(frame) -> list[dict]:
    """Per node (per rail): median a->b/b->a bandwidth at the largest size over its pairs, and the ratio to
    the median of every node: a node whose rows are all low stands out here."""
    ok = frame[(frame["status"] == "ok") & (frame["direction"] != "pingpong")]
    if ok.empty:
        return []
    big = ok[ok["size_bytes"] == ok["size_bytes"].max()]
    per: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in big.itertuples():
        per[(r.node_a, r.rail)].append(float(r.algbw_gbps))
        per[(r.node_b, r.rail)].append(float(r.algbw_gbps))
    med = {k: statistics.median(v) for k, v in per.items()}
    overall = statistics.median(med.values())
    return [{"node": k[0], "rail": k[1], "pairs": len(per[k]) // 2, "median_gbps": v,
             "ratio": v / overall if overall else float("nan")} for k, v in sorted(med.items())]


def print_sweep(frame, info: dict, echo=print) -> None:
    nodes = info["nodes"]
    plans = ", ".join(f"{p['phase']}: {p['rounds']} rounds, {p['pairs']} pairs" for p in info["plans"])
    echo(f"# fabricbench pairwise sweep {info['run_id']}: {len(nodes)} nodes ({plans}), backend "
         f"{info['backend']}, " + (f"up to {info['iters']} iterations per measurement, sized to "
                                    f"{info['measure_target_s']:g} s each" if info.get("measure_target_s")
                                    else f"{info['iters']} iterations"))
    echo(f"#{'round':>6} {'node_a':>12} {'node_b':>12} {'rail':>4} {'size(B)':>10} {'a->b GB/s':>10} "
         f"{'b->a GB/s':>10} {'lat(us)':>9}  status")
    if len(frame):
        keyed = defaultdict(dict)
        for r in frame.itertuples():
            keyed[(r.round, r.node_a, r.node_b, r.rail, r.size_bytes)][r.direction] = r
        for (rnd, a, b, rail, size), d in sorted(keyed.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2],
                                                                               kv[0][3], kv[0][4])):
            def bw(x):
                row = d.get(x)
                return f"{row.algbw_gbps:.4f}" if row is not None and row.status == "ok" else "FAILED"
            pp = d.get("pingpong")
            lat = f"{pp.latency_us:.1f}" if pp is not None and pp.status == "ok" else "FAILED"
            status = "ok" if all(r.status == "ok" for r in d.values()) else "failed"
            echo(f" {rnd:>6} {a:>12} {b:>12} {rail:>4} {size:>10} {bw('a->b'):>10} {bw('b->a'):>10} {lat:>9}  {status}")
    summary = node_summary(frame)
    if summary:
        echo("# per node: median bandwidth at the largest size over its pairs (both directions), vs all nodes")
        for s in summary:
            flag = "  LOW" if s["ratio"] < 0.8 else ""
            rail = f" rail {s['rail']}" if info.get("tasks_per_node", 1) > 1 else ""
            echo(f"#   {s['node']}{rail}: {s['median_gbps']:.4f} GB/s ({s['ratio'] * 100:.0f}% of the median){flag}")
    for f in info["failed_pairs"]:
        echo(f"# FAILED round {f['round']} {f['node_a']}-{f['node_b']}: {f['error']}")
    for node, why in info["nodes_missing"].items():
        echo(f"# node {node}: {why}")
    echo(f"# {info['pairs'] - info['pairs_failed']} of {info['pairs']} pairs ok; results: "
         f"{info.get('out_dir') or ''}".rstrip())


def write_json(path: Path, obj) -> None:
    from fabricbench.results import atomic_write_json

    atomic_write_json(path, obj)


def is_sweep_dir(out: Path) -> bool:
    return (out / "plan.json").exists() or (out / "sweep.json").exists()


def results_dir_for_job(job_id: str, search: list[Path]) -> Path | None:
    """The --out of a job submitted from here: results/<...>/job.json with this id (newest first)."""
    for root in search:
        if not root.is_dir():
            continue
        for path in sorted(root.glob(f"*/{JOB_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True):
            try:
                doc = json.loads(path.read_text())
                if isinstance(doc, dict) and str(doc.get("job_id")) == str(job_id):
                    return path.parent
            except (OSError, ValueError, RecursionError):
                continue
    return None


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
