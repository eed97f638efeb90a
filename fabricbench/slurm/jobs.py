"""Thin wrappers around sbatch, squeue, sacct, scontrol and scancel, and the job states they report.

Every command runs with a timeout and its failure becomes a one-line error that names the command. The
state of a job is read from squeue while it is queued or running, then from sacct (accounting), then from
`scontrol show job` (clusters without accounting keep finished jobs there for MinJobAge seconds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fabricbench.errors import RunFailed, UsageError

PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT"}
RUNNING = {"RUNNING", "COMPLETING"}
OK = {"COMPLETED"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
          "REVOKED", "SPECIAL_EXIT"}
COMMAND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # Slurm's word (PENDING, RUNNING, COMPLETED, FAILED, ...), or UNKNOWN
    phase: str  # pending | running | done
    ok: bool | None = None  # done: COMPLETED with exit 0
    exit_code: str | None = None  # 'N:S' as sacct prints it
    reason: str | None = None  # pending reason or failure reason
    nodes: str | None = None  # allocated node list (compressed)


def phase_of(state: str) -> str:
    word = state.split()[0].rstrip("+") if state else ""
    if word in PENDING:
        return "pending"
    if word in RUNNING:
        return "running"
    if word in OK or word in FAILED:
        return "done"
    return "unknown"


def _run(cmd: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    exe = cmd[0]
    if shutil.which(exe) is None:
        raise UsageError(f"'{exe}' is not on PATH: run this on a Slurm login node (or install slurm-client)")
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"'{' '.join(cmd[:3])} ...' did not answer within {timeout:g} s (is slurmctld up?)") from None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def sbatch(script: str, extra_args: Sequence[str] = (), cwd: str | None = None) -> str:
    """Submit `script` (text, on stdin) with --parsable; returns the job id."""
    if shutil.which("sbatch") is None:
        raise UsageError("'sbatch' is not on PATH: run this on a Slurm login node (or use --dry-run to see the "
                         "script)")
    try:
        res = subprocess.run(["sbatch", "--parsable", *extra_args], input=script, capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT_S, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"sbatch did not answer within {COMMAND_TIMEOUT_S:g} s (is slurmctld up?)") from None
    if res.returncode != 0:
        raise UsageError(f"sbatch refused the job: {_first_line(res.stderr) or 'exit code %d' % res.returncode}")
    job_id = res.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise RunFailed(f"sbatch printed {res.stdout.strip()!r}, not a job id")
    return job_id


def squeue(job_id: str) -> JobState | None:
    res = _run(["squeue", "-h", "-j", job_id, "-o", "%T|%r|%N"])
    if res.returncode != 0:
        if "Invalid job id" in res.stderr:
            return None
        raise RunFailed(f"squeue -j {job_id} failed: {_first_line(res.stderr)}")
    line = _first_line(res.stdout)
    if not line:
        return None
    state, reason, nodes = (line.split("|") + ["", ""])[:3]
    return JobState(job_id, state, phase_of(state), reason=None if reason in ("None", "") else reason,
                    nodes=nodes or None)


def sacct(job_id: str) -> JobState | None:
    res = _run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode,NodeList"])
    if res.returncode != 0:
        return None  # no accounting on this cluster: fall back to scontrol
    line = _first_line(res.stdout)
    if not line:
        return None
    state, code, nodes = (line.split("|") + ["", ""])[:3]
    phase = phase_of(state)
    ok = (phase == "done" and state.split()[0] == "COMPLETED" and code.startswith("0")) if phase == "done" else None
    return JobState(job_id, state.split()[0], phase, ok=ok, exit_code=code or None, nodes=nodes or None)


def scontrol_job(job_id: str) -> JobState | None:
    res = _run(["scontrol", "show", "job", "-o", job_id])
    if res.returncode != 0:
        return None
    fields = dict(tok.split("=", 1) for tok in res.stdout.split() if "=" in tok)
    state = fields.get("JobState")
    if not state:
        return None
    phase = phase_of(state)
    code = fields.get("ExitCode")
    ok = (state == "COMPLETED" and (code or "0").startswith("0")) if phase == "done" else None
    reason = fields.get("Reason")
    return JobState(job_id, state, phase, ok=ok, exit_code=code, reason=None if reason in (None, "None") else reason,
                    nodes=fields.get("NodeList") if fields.get("NodeList") not in (None, "(null)") else None)


def job_state(job_id: str) -> JobState:
    """Queued/running jobs from squeue; finished ones from sacct, else scontrol; else UNKNOWN."""
    live = squeue(job_id)
    if live is not None and live.phase in ("pending", "running"):
        return live
    for source in (sacct, scontrol_job):
        st = source(job_id)
        if st is not None and st.phase != "unknown":
            return st
    if live is not None:
        return live
    return JobState(job_id, "UNKNOWN", "unknown")


def scancel(job_id: str) -> bool:
    try:
        return _run(["scancel", job_id], timeout=15).returncode == 0
    except (UsageError, RunFailed):
        return False


def follow(job_id: str, on_change: Callable[[JobState, float], None], poll_s: float = 1.0,
           deadline_s: float | None = None, sleep: Callable[[float], None] = time.sleep) -> JobState:
    """Poll until the job is done (or `deadline_s` passes: RunFailed). `on_change(state, elapsed)` each poll.
    An UNKNOWN state right after submission (slurmctld not caught up) is retried a few times."""
    start = time.monotonic()
    unknown = 0
    while True:
        st = job_state(job_id)
        elapsed = time.monotonic() - start
        on_change(st, elapsed)
        if st.phase == "done":
            return st
        if st.phase == "unknown":
            unknown += 1
            if unknown > max(10, int(30 / max(poll_s, 0.01))):
                return st  # squeue, sacct and scontrol all forgot it: the caller looks at the files
        if deadline_s is not None and elapsed > deadline_s:
            raise RunFailed(f"job {job_id} is still {st.state.lower()} after {deadline_s:g} s of waiting; it was "
                            f"left queued (scancel {job_id} to stop it, fabricbench collect {job_id} later)")
        sleep(poll_s)


def in_job() -> bool:
    return "SLURM_JOB_ID" in os.environ
