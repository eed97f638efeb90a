"""One candidate = one `fabricbench run` in fresh processes (NCCL and MPI read their settings once per process).

`run` is called as a command, never imported, so its engine can change freely: locally with `--nprocs N`, or
behind any launcher prefix the user gives (`srun -N4 --mpi=pmix`, `mpirun -np 8 --host ...`). Every run has
the bit-exact check on (`-c 1`); its results directory is read back with fabricbench.results.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fabricbench.results.io import RESULTS_FILE, read_results
from fabricbench.tune.search import Candidate, Sample

INJECT_ENV = "FABRICBENCH_INJECT"


@dataclass
class RunSpec:
    """What every candidate run measures: the same ops, sizes, ranks and launcher."""

    ops: list[str]
    backend: str
    minbytes: str
    maxbytes: str
    stepfactor: int = 4
    iters: int = 20
    warmup: int = 5
    nprocs: int | None = None  # local ranks (no launcher)
    launcher: list[str] = field(default_factory=list)  # e.g. ['srun', '-N4', '--mpi=pmix']
    timeout_s: float = 120.0  # passed to run --timeout; the runner itself waits grace_s longer, then kills
    grace_s: float = 30.0
    python: str = sys.executable
    inject: dict[str, str] = field(default_factory=dict)  # candidate name -> FABRICBENCH_INJECT (self-tests)

    def argv(self, out_dir: Path, iters: int | None = None) -> list[str]:
        run = [self.python, "-m", "fabricbench", "run", *self.ops, "--backend", self.backend,
               "-b", self.minbytes, "-e", self.maxbytes, "-f", str(self.stepfactor),
               "-n", str(iters or self.iters), "-w", str(self.warmup), "-c", "1", "--out", str(out_dir),
               "-q", "--timeout", f"{self.timeout_s:g}"]
        if self.launcher:
            return [*self.launcher, *run]
        return run + ["--nprocs", str(self.nprocs or 2)]

    def launcher_env_args(self, env: dict[str, str]) -> list[str]:
        """mpirun forwards OMPI_* variables itself; anything else needs -x NAME."""
        if self.launcher and Path(self.launcher[0]).name in ("mpirun", "mpiexec", "orterun"):
            return [a for k in sorted(env) if not k.startswith("OMPI_") for a in ("-x", k)]
        return []


def base_env() -> dict[str, str]:
    """This environment without anything that would make the child think it is already a rank."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "FABRICBENCH_CONFIG", INJECT_ENV)
    return {k: v for k, v in os.environ.items()
            if k not in drop and not k.startswith(("OMPI_COMM_WORLD", "PMIX_RANK", "PMI_RANK"))}


def run_candidate(spec: RunSpec, cand: Candidate, out_dir: Path, rnd: int, phase: str,
                  extra_env: dict[str, str] | None = None, iters: int | None = None) -> Sample:
    out_dir.mkdir(parents=True, exist_ok=True)
    env = base_env()
    overlay = {**cand.env_dict, **(extra_env or {})}
    if cand.name in spec.inject:
        overlay[INJECT_ENV] = spec.inject[cand.name]
    env.update(overlay)
    argv = spec.argv(out_dir, iters)
    if spec.launcher:
        argv = [argv[0], *spec.launcher_env_args(overlay), *argv[1:]]
    t0 = time.monotonic()
    log = out_dir / "tune-run.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        status, reason = "ok", ""
        try:
            rc = proc.wait(timeout=spec.timeout_s + spec.grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, status, reason = None, "timeout", f"no result after {spec.timeout_s + spec.grace_s:g} s; stopped"
    wall = time.monotonic() - t0
    sample = Sample(candidate=cand.name, round=rnd, phase=phase, status=status, reason=reason, wall_s=wall,
                    run_dir=str(out_dir))
    _read_back(sample, out_dir, rc, log)
    return sample


def run_with_retry(spec: RunSpec, cand: Candidate, out_dir: Path, rnd: int, phase: str,
                   extra_env: dict[str, str] | None = None) -> Sample:
    """A run that crashed or hung is tried once more (ranks do die at start-up for reasons that have nothing to
    do with the candidate, e.g. a segfault in MPI_Init on a busy node); wrong data is never retried."""
    first = run_candidate(spec, cand, out_dir, rnd, phase, extra_env)
    if first.status not in ("failed", "timeout"):
        return first
    second = run_candidate(spec, cand, out_dir.with_name(out_dir.name + "-retry"), rnd, phase, extra_env)
    second.retried = f"{first.status}: {first.reason}"
    if not second.ok:
        second.reason = f"{second.reason} (twice; first: {first.reason})"
    return second


def _read_back(sample: Sample, out_dir: Path, rc: int | None, log: Path) -> None:
    rows = None
    if (out_dir / RESULTS_FILE).exists():
        try:
            frame = read_results(out_dir)
            rows = frame[frame["row_kind"] == "op"]
        except Exception:  # a damaged file is a failed run, named below
            rows = None
    if rows is not None and len(rows):
        sample.nwrong = int(rows["nwrong"].fillna(0).sum())
        for _, row in rows.iterrows():
            if row["status"] == "ok" and row["time_us"] == row["time_us"]:
                size = int(row["size_bytes"])
                sample.times_us[size] = float(row["time_us"])
                sample.busbw_gbps[size] = float(row["busbw_gbps"])
    if sample.status == "timeout":
        return
    if sample.nwrong:
        sample.status, sample.reason = "wrong-data", f"{sample.nwrong} wrong values in the bit-exact check (-c 1)"
    elif rc != 0:
        sample.status = "failed"
        sample.reason = f"exit code {rc}: {_last_line(log)}"
    elif not sample.times_us:
        sample.status, sample.reason = "failed", "no measurement in results.parquet"


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "error" in line.lower():
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue


def describe(spec: RunSpec) -> str:
    where = shlex.join(spec.launcher) if spec.launcher else f"{spec.nprocs or 2} local ranks"
    return f"{' '.join(spec.ops)} -b {spec.minbytes} -e {spec.maxbytes} -f {spec.stepfactor}, {spec.backend} on {where}"
