"""Build the batch script for a collective run or a sweep, submit it, follow the job, collect the results."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fabricbench.errors import Terminated, UsageError
from fabricbench.slurm import jobs
from fabricbench.slurm.collect import JOB_FILE, NODES_FILE
from fabricbench.slurm.templates import JobSpec, env_lines, load_template, render, shell_words

MPI_DEFAULT = "pmix"


@dataclass
class Submission:
    spec: JobSpec
    out: Path
    env: list[tuple[str, str]] = field(default_factory=list)
    python: str = sys.executable
    srun_mpi: str | None = None  # --mpi=<this> on srun (MPI backend)
    extra_srun: list[str] = field(default_factory=list)

    def common(self) -> dict[str, str]:
        self.spec.output_dir = str(self.out)
        sbatch = self.spec.directives()
        return {
            "SBATCH": "\n".join(sbatch),
            "ENV": "\n".join(env_lines(self.env)) if self.env else "# (no --env)",
            "OUT": shell_words([str(self.out)]),
            # srun expands %t, %N, ... in --output/--error: a literal '%' of the path is written '%%' there
            "OUT_PATTERN": shell_words([str(self.out).replace("%", "%%")]),
            "JOB_INFO": f'printf "%s\\n" "$SLURM_JOB_NODELIST" > "$OUT/{NODES_FILE}"',
            "SRUN_ARGS": shell_words(self._srun_args()),
        }

    def _srun_args(self) -> list[str]:
        args = [f"--ntasks-per-node={self.spec.ntasks_per_node}"]
        if self.srun_mpi:
            args.append(f"--mpi={self.srun_mpi}")
        return args + list(self.extra_srun)

    def fb(self, *words: str) -> str:
        return shell_words([self.python, "-m", "fabricbench", *words])


def run_script(sub: Submission, run_args: Sequence[str]) -> str:
    values = sub.common()
    values["COMMAND"] = sub.fb("run", *run_args, "--out", str(sub.out))
    return render(load_template("run"), values)


def sweep_script(sub: Submission, step_timeout_s: float, retest: bool, per_rail: bool) -> str:
    values = sub.common()
    out = str(sub.out)
    values.update(
        PLAN=sub.fb("sweep", "_plan", "--dir", out),
        STEP_TIMEOUT=str(int(step_timeout_s)),
        RANK_COMMAND=shell_words([sub.python, "-m", "fabricbench.slurm.sweep", "--plan", str(Path(out) / "plan.json")]),
        RETEST_PLAN=sub.fb("sweep", "_retest", "--dir", out) if retest else "false",
        RETEST_COMMAND=shell_words([sub.python, "-m", "fabricbench.slurm.sweep", "--plan",
                                    str(Path(out) / "plan-retest.json")]),
        COLLECT=sub.fb("collect", out, "--quiet", "--in-job"),
    )
    return render(load_template("rail-sweep" if per_rail else "pairwise"), values)


def tune_script(sub: Submission, tune_args: Sequence[str]) -> str:
    """The tuning driver on the batch host; its --launcher is srun (one step per candidate run)."""
    values = sub.common()
    launcher = ["srun", "--kill-on-bad-exit=1", *sub._srun_args()]
    values["COMMAND"] = sub.fb("tune", *tune_args, "--launcher", shell_words(launcher), "--out", str(sub.out))
    return render(load_template("tune"), values)


def run_args_from(params: dict, values: dict, skip: Sequence[str] = ()) -> list[str]:
    """The `fabricbench run` words for option values that differ from their defaults (ops first)."""
    words: list[str] = []
    for name, param in params.items():
        if name in skip:
            continue
        value = values.get(name)
        info = param.default
        decls = [d for d in (getattr(info, "param_decls", None) or ()) if d.startswith("--")]
        if not decls:  # the OPS argument
            words = [*(value or []), *words]
            continue
        if value is None or value == info.default:
            continue
        if isinstance(value, bool):
            words.append(decls[0])
        else:
            words += [decls[0], str(value)]
    return words


# -- following a job -------------------------------------------------------------------------------------------
class StatusLine:
    """A live line on a terminal (rich), one line per change otherwise."""

    def __init__(self, job_id: str, stream=None):
        self.job_id, self.stream = job_id, stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = None
        self._status = None
        if self.tty:
            from rich.console import Console

            self._status = Console(file=self.stream).status(f"job {job_id}: submitted")
            self._status.start()

    def __call__(self, st: jobs.JobState, elapsed: float) -> None:
        text = f"job {self.job_id}: {st.phase} ({st.state.lower()}"
        if st.reason and st.phase == "pending":
            text += f", {st.reason}"
        if st.nodes and st.phase != "pending":
            text += f", nodes {st.nodes}"
        text += f") {elapsed:.0f} s"
        if self._status is not None:
            self._status.update(text)
        elif (st.phase, st.state) != self._last:
            print(f"fabricbench: {text}", file=self.stream, flush=True)
        self._last = (st.phase, st.state)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()


def submit_and_follow(script: str, out: Path, meta: dict, wait: bool, poll_s: float, deadline_s: float | None):
    """sbatch the script; returns (job_id, final JobState or None with --no-wait). Ctrl-C cancels the job."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    from fabricbench.results import atomic_write_text

    atomic_write_text(out / "job.sbatch", script)
    from fabricbench.results import atomic_write_json

    t0 = time.time()
    # A SIGTERM while sbatch runs waits until the job id is on disk (job.json): then it cancels the job
    # (or, with --no-wait, ends this process with the job detached and recorded).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        job_id = jobs.sbatch(script)
        meta = dict(meta, job_id=job_id, submitted=t0)
        atomic_write_json(out / JOB_FILE, meta)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        raise
    if not wait:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        return job_id, None
    line = StatusLine(job_id)
    first_running: list[float] = []

    def on_change(st, elapsed):
        if st.phase in ("running", "done") and not first_running:
            first_running.append(time.time())
        line(st, elapsed)

    try:
        with sigterm_raises():
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a pending one is raised here
            final = jobs.follow(job_id, on_change, poll_s=poll_s, deadline_s=deadline_s)
    except (KeyboardInterrupt, Terminated) as err:
        # Ctrl-C and SIGTERM both cancel the job: nobody would be left to collect it (docs/slurm.md)
        line.close()
        cancelled = jobs.scancel(job_id)
        how = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
        meta.update(cancelled_by=how, cancelled=cancelled, finished=time.time())
        atomic_write_json(out / JOB_FILE, meta)
        print(f"fabricbench: {'cancelled' if cancelled else 'could not cancel'} Slurm job {job_id} (scancel)",
              file=sys.stderr, flush=True)
        if isinstance(err, Terminated):
            raise Terminated(f"interrupted by SIGTERM: Slurm job {job_id} "
                             f"{'cancelled' if cancelled else 'could NOT be cancelled (scancel ' + job_id + ')'}") from None
        raise
    finally:
        line.close()
    meta["finished"] = time.time()
    if first_running:
        meta["first_seen_running"] = first_running[0]
    atomic_write_json(out / JOB_FILE, meta)
    return job_id, final


@contextlib.contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises Terminated (like Ctrl-C raises KeyboardInterrupt); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not break the cleanup
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_job(out: Path) -> dict:
    try:
        return json.loads((out / JOB_FILE).read_text())
    except (OSError, ValueError):
        return {}


def default_python() -> str:
    return os.environ.get("FABRICBENCH_PYTHON", sys.executable)


def ensure_shared(out: Path) -> None:
    if str(out).startswith(("/tmp/", "/var/tmp/", "/dev/shm/")):
        print(f"fabricbench: warning: --out {out} is under a node-local directory on most clusters; the ranks "
              "write there on their own nodes, so results may not come back. Use a shared filesystem path.",
              file=sys.stderr)


def check_out(out: Path) -> Path:
    out = out.resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot create it ({err.strerror or err})") from None
    if any(out.iterdir()) and (out / "run.json").exists():
        raise UsageError(f"--out {out} already holds results; choose a new directory")
    return out

