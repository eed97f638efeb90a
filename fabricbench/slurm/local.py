"""`sweep pairwise --local`: every "node" is a local process, so the whole sweep machinery runs on one machine.

Unlike `fabricbench run`'s launcher, a process that dies does not stop the others (that is the point of a
sweep: the survivors carry on); the step is bounded by its deadline, after which whatever is left is killed
(SIGTERM, then SIGKILL, per process group: nothing is left behind).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fabricbench.slurm.sweep import RANK_ENV, Plan

POLL_S = 0.05
GRACE_S = 3.0


def run_step(plan: Plan, plan_file: Path, deadline_s: float) -> dict:
    """Run every rank of `plan` locally; returns {rank: {"node", "exit", "why"}} (also saved as steps/<phase>.json)."""
    out = Path(plan.out_dir)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    nranks = len(plan.nodes) * plan.tasks_per_node
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID"):
        env.pop(key, None)
    prefix = "" if plan.phase == "sweep" else f"{plan.phase}-"
    procs: list[tuple[int, str, subprocess.Popen]] = []
    try:
        for rank in range(nranks):
            node = plan.nodes[rank // plan.tasks_per_node]
            log = logs / f"{prefix}rank{rank}-{node}.log"
            with log.open("ab") as fh:
                proc = subprocess.Popen([sys.executable, "-m", "fabricbench.slurm.sweep", "--plan",
                                         str(plan_file)], env=dict(env, **{RANK_ENV: str(rank)}),
                                        stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True)
            procs.append((rank, node, proc))
        end = time.monotonic() + deadline_s
        next_check = 0.0
        abandoned: dict[int, str] = {}
        while time.monotonic() < end and any(p.poll() is None for _, _, p in procs):
            time.sleep(POLL_S)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.5
                abandoned = _abandoned(plan, procs)
                if abandoned and all(p.poll() is not None or rank in abandoned for rank, _, p in procs):
                    break
        timed_out = [rank for rank, _, p in procs if p.poll() is None and rank not in abandoned]
    finally:
        _stop(procs)
    status = {}
    for rank, node, p in procs:
        code = p.returncode
        if rank in abandoned:
            why = abandoned[rank]
        elif rank in timed_out:
            why = f"still running at the step deadline ({deadline_s:g} s) and stopped"
        elif code is not None and code < 0:
            try:
                why = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                why = f"killed by signal {-code}"
        elif code:
            why = f"exited with code {code}"
        else:
            why = "ok"
        status[rank] = {"node": node, "exit": code, "why": why}
    from fabricbench.atomic import atomic_write_text

    atomic_write_text(out / "steps" / f"{plan.phase}.json", json.dumps(status, indent=1) + "\n")
    return status


def _abandoned(plan: Plan, procs) -> dict[int, str]:
    """Running ranks that can only wait now: every partner they have left has exited, and they wrote nothing for
    connect_timeout_s (a hung process). Stopping them early ends the step without waiting for its deadline."""
    exited = {rank for rank, _, p in procs if p.poll() is not None}
    if not exited:
        return {}
    out: dict[int, str] = {}
    rounds_index = {r["round"]: i for i, r in enumerate(plan.rounds)}
    for rank, node_name, p in procs:
        if p.poll() is not None:
            continue
        node, rail = rank // plan.tasks_per_node, rank % plan.tasks_per_node
        path = Path(plan.out_dir) / "records" / f"{plan.phase}-rank{rank}.jsonl"
        try:
            quiet_s = time.time() - path.stat().st_mtime
            last = -1
            for line in path.read_text(errors="replace").splitlines():
                rec = json.loads(line) if line.startswith("{") else {}
                if rec.get("kind") in ("pair_done", "pair_failed"):
                    last = max(last, rounds_index.get(rec["round"], -1))
        except (OSError, ValueError):
            continue
        if quiet_s < plan.connect_timeout_s:
            continue
        peers = {a if b == node else b for r in plan.rounds[last + 1:] for a, b in r["pairs"] if node in (a, b)}
        if all(peer * plan.tasks_per_node + rail in exited for peer in peers):
            out[rank] = (f"made no progress for {quiet_s:.0f} s after round {last} (hung) and every partner it "
                         "had left had finished; stopped")
    return out


def _stop(procs) -> None:
    for _, _, p in procs:
        if p.poll() is None:
            _killpg(p, signal.SIGTERM)
    end = time.monotonic() + GRACE_S
    while time.monotonic() < end and any(p.poll() is None for _, _, p in procs):
        time.sleep(POLL_S)
    for _, _, p in procs:
        _killpg(p, signal.SIGKILL)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _killpg(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
