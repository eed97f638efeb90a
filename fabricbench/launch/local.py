"""The local launcher: N ranks as processes on this machine, watched until they finish, fail or hang.

Each rank runs `python -m fabricbench worker` with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT on a free port); with the MPI backend the ranks are started by `mpirun` instead. Rank 0's
stdout is the table; every rank's stderr goes to `<out>/logs/rank<N>.log`. When a rank fails, every other
rank is stopped at once (each rank leads its own process group, so its children go too) and the failed rank
is named; when no rank returns from an operation call for --timeout seconds, the rank that is behind
is named with its host and the call it is in.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fabricbench.engine.config import ENV as CONFIG_ENV
from fabricbench.engine.config import RunConfig
from fabricbench.engine.driver import PROGRESS_ENV, finalize_failed_run
from fabricbench.errors import RunFailed, Terminated, UsageError
from fabricbench.launch.progress import RunProgress, read_heartbeats

POLL_S = 0.05
STOP_GRACE_S = 3.0


RANKS_PER_CORE = 4  # beyond this, ranks only wait for each other's cores: timings mean nothing
RANK_MEMORY = 256 << 20  # a rank is a Python with torch loaded: about 250 MB resident


def _available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def max_local_ranks() -> tuple[int, str]:
    """The most ranks this machine can run at once, and why (cores and available memory)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit, why = RANKS_PER_CORE * cores, f"{RANKS_PER_CORE} per core on {cores} core(s)"
    mem = _available_memory()
    if mem is not None and mem // RANK_MEMORY < limit:
        limit, why = max(1, mem // RANK_MEMORY), f"{mem / 1e9:.1f} GB available at {RANK_MEMORY >> 20} MiB per rank"
    return limit, why


def check_nprocs(nprocs: int, allow_many: bool = False) -> None:
    """Refuse more local ranks than the machine can hold, unless the operator says so."""
    limit, why = max_local_ranks()
    if nprocs > limit and not allow_many:
        raise UsageError(f"--nprocs {nprocs} is more than this machine can run ({limit}: {why}); "
                         "use fewer ranks, or --allow-many-ranks to start them anyway")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Rank:
    index: int  # rank number (mpirun: 0, the whole job)
    proc: subprocess.Popen
    log: Path
    exit_seen: float | None = None


def _worker_cmd() -> list[str]:
    return [sys.executable, "-m", "fabricbench", "worker"]


def _mpirun_cmd(nprocs: int) -> list[str]:
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    if not mpirun:
        raise UsageError("--backend mpi with --nprocs needs mpirun on PATH (apt-get install openmpi-bin), or "
                         "start the ranks yourself: mpirun -np N fabricbench run --backend mpi ...")
    cmd = [mpirun, "-np", str(nprocs)]
    if _is_open_mpi(mpirun):
        cmd += ["--oversubscribe", "--bind-to", "none"]
    return cmd + _worker_cmd()


def _is_open_mpi(mpirun: str) -> bool:
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Open MPI" in out or "OpenRTE" in out


def check_gpus_for_ranks(nprocs: int, backend: str, environ=None, proc: str = "/proc") -> None:
    """One GPU per rank for the GPU backends: more local ranks than GPUs is refused before any rank starts
    (each rank would otherwise wrap around onto a GPU another rank holds, and NCCL fail later)."""
    from fabricbench.engine.gpu_inventory import visible_gpu_count

    if backend not in ("nccl", "nccl-direct"):
        return
    env = os.environ if environ is None else environ
    count = visible_gpu_count(env, proc)
    if count is not None and nprocs > count:
        raise UsageError(f"--nprocs {nprocs} with --backend {backend} needs one GPU per rank, but this node shows "
                         f"{count} GPU(s) (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                         f"use --nprocs {count} or fewer")


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup
    raise Terminated("terminated (SIGTERM)")


def launch(cfg: RunConfig, nprocs: int, backend: str) -> int:
    """Run `cfg` on `nprocs` local ranks; returns the exit code (0 ok; raises RunFailed with the reason).

    SIGTERM is handled like Ctrl-C: every rank is stopped, results kept, run.json says "interrupted"."""
    check_gpus_for_ranks(nprocs, backend)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        return _launch(cfg, nprocs, backend)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _spawn(argv: list[str], ranks: list[Rank], index: int, log: Path, **kwargs) -> None:
    """Start one rank; on a fork/exec failure stop those already started and say so in one line."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
    except OSError as err:
        _stop_all(ranks)
        raise RunFailed(f"could not start rank {index} ({err.strerror or err}); the {len(ranks)} rank(s) already "
                        "started were stopped: lower --nprocs or raise the process/memory limits (ulimit -u)") from None
    ranks.append(Rank(index, proc, log))


def _launch(cfg: RunConfig, nprocs: int, backend: str) -> int:
    out = Path(cfg.out_dir)
    logs, progress = out / "logs", out / ".progress"
    logs.mkdir(parents=True, exist_ok=True)
    progress.mkdir(parents=True, exist_ok=True)
    for stale in progress.glob("rank*"):
        stale.unlink()
    env = dict(os.environ)
    env.update({CONFIG_ENV: cfg.to_json(), PROGRESS_ENV: str(progress), "FABRICBENCH_LAUNCHER": "local",
                "PYTHONUNBUFFERED": "1"})
    env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun does: N ranks must not each take every core
    ranks: list[Rank] = []
    if backend == "mpi":
        if os.geteuid() == 0:  # Open MPI refuses root unless told (a container or a CI machine)
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        if nprocs >= (os.cpu_count() or 1):
            # Ranks that spin while waiting steal the cores their peers need: yield instead.
            env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            env.pop(key, None)
    try:
        if backend == "mpi":
            log = logs / "mpirun.log"
            with log.open("wb") as err_log:
                _spawn(_mpirun_cmd(nprocs), ranks, 0, log, env=env, stdout=subprocess.PIPE, stderr=err_log)
        else:
            env.update(WORLD_SIZE=str(nprocs), LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(free_port()))
            for r in range(nprocs):
                rank_env = dict(env, RANK=str(r), LOCAL_RANK=str(r))
                log = logs / f"rank{r}.log"
                with log.open("ab") as err_log:
                    _spawn(_worker_cmd(), ranks, r, log, env=rank_env,
                           stdout=subprocess.PIPE if r == 0 else err_log, stderr=err_log)
        with RunProgress(ranks[0].proc.stdout, progress, nprocs) as shown:
            return _watch(ranks, cfg, progress, backend, shown)
    except (KeyboardInterrupt, Terminated) as err:
        _stop_all(ranks)
        how = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
        finalize_failed_run(out, f"interrupted ({how}); results hold every size completed before it",
                            status="interrupted")
        if isinstance(err, Terminated):
            raise Terminated(f"interrupted by SIGTERM: all {len(ranks)} rank(s) stopped; results so far in {out}") from None
        raise


def _watch(ranks: list[Rank], cfg: RunConfig, progress: Path, backend: str, shown: RunProgress) -> int:
    """Wait for the ranks. --timeout is a no-progress detector (nccl-tests -T): the run is stopped only when
    no rank has returned from an operation call for that long, never because a healthy sweep runs long."""
    watch = NoProgress(cfg.timeout_s, progress, nranks=len(ranks) if backend != "mpi" else 1)
    while True:
        now = time.monotonic()
        shown.tick()
        for r in ranks:
            if r.exit_seen is None and r.proc.poll() is not None:
                r.exit_seen = now
        failed = [r for r in ranks if r.exit_seen is not None and r.proc.returncode != 0]
        if failed:
            culprit = _first_failure(failed)
            _stop_all(ranks)
            shown.finish()
            _raise_for_failure(culprit, ranks, cfg, backend)
        if all(r.exit_seen is not None for r in ranks):
            shown.finish()  # the table's last lines before anything else is printed
            return 0
        if watch.stalled(now):
            report = _stuck_ranks(progress, len(ranks) if backend != "mpi" else 0)
            _stop_all(ranks)
            shown.finish()
            message = (f"no rank returned from an operation call for {cfg.timeout_s:g} s (--timeout, a "
                       f"no-progress limit); {report}; all ranks were stopped")
            finalize_failed_run(cfg.out_dir, message)
            raise RunFailed(f"{message}. Logs: {Path(cfg.out_dir) / 'logs'}")
        time.sleep(POLL_S)


class NoProgress:
    """Progress = the sum over ranks of operation calls returned (from their heartbeat files, rewritten every
    0.5 s). `stalled` is true once that sum has not moved for `limit_s` seconds (0: never) while some rank is
    waiting inside an operation call (or has not entered the one its peers wait in) -- nccl-tests' -T, which
    times the wait for an operation to complete. Host work between calls (writing results, checking data,
    tearing down) is not a hang. Before every rank has started its heartbeat (importing the libraries,
    opening the communicator), the limit is at least STARTUP_S, so a short -T does not stop ranks that are
    still starting on a busy machine."""

    CHECK_EVERY_S = 0.25
    STARTUP_S = 120.0

    def __init__(self, limit_s: float, progress: Path, clock=time.monotonic, nranks: int = 1):
        self.limit_s, self.progress, self.clock, self.nranks = limit_s, progress, clock, nranks
        self.started = False
        self.in_call = False
        self.beats: dict = {}
        self.last_change = clock()
        self.last_total: tuple[int, int] = (0, 0)  # nothing reported yet
        self._next_check = 0.0

    def stalled(self, now: float | None = None) -> bool:
        if not self.limit_s:
            return False
        now = self.clock() if now is None else now
        if now >= self._next_check:
            self._next_check = now + self.CHECK_EVERY_S
            self.beats.update(read_heartbeats(self.progress))  # a rank read badly keeps its last beat
            beats = self.beats
            self.started = len(beats) >= max(1, self.nranks)
            self.in_call = any(b.calls > b.done for b in beats.values())
            total = (len(beats), sum(b.done for b in beats.values()))
            if total != self.last_total:
                self.last_total, self.last_change = total, now
        if not self.started:
            return now - self.last_change > max(self.limit_s, self.STARTUP_S)
        return self.in_call and now - self.last_change > self.limit_s


def _first_failure(failed: list[Rank]) -> Rank:
    """The rank that failed first; among those seen in the same poll, one killed by a signal, since the
    others are usually its peers noticing the lost connection."""
    first_time = min(r.exit_seen for r in failed)
    same_poll = [r for r in failed if r.exit_seen - first_time < POLL_S * 2]
    by_signal = [r for r in same_poll if r.proc.returncode < 0]
    return min(by_signal or same_poll, key=lambda r: r.index)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _last_error_line(log: Path) -> str | None:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("fabricbench: error:"):
            return line.removeprefix("fabricbench: error:").strip()
    lines = [line for line in lines if line.strip() and not line.startswith("---")]
    return lines[-1].strip() if lines else None


def _raise_for_failure(culprit: Rank, ranks: list[Rank], cfg: RunConfig, backend: str) -> None:
    code = culprit.proc.returncode
    detail = _last_error_line(culprit.log)
    if detail and code == 2:
        raise UsageError(detail)  # bad input found by the ranks themselves: one line, exit 2
    if culprit.index == 0 and code == 1 and detail and "wrong values" in detail:
        raise RunFailed(detail)  # rank 0 finished and reported wrong data; run.json already says so
    who = "mpirun" if backend == "mpi" else f"rank {culprit.index} (pid {culprit.proc.pid})"
    message = f"{who} {_describe_exit(code)}"
    mpi = mpi_failure(_read(culprit.log), read_heartbeats(Path(cfg.out_dir) / ".progress")) if backend == "mpi" else None
    if mpi:
        message = mpi  # the rank and host, not Open MPI's banner (kept in the log)
        if detail and detail.startswith("rank "):
            message += f": {detail}"
    elif detail and code > 0 and not detail.startswith("---"):
        message += f": {detail}"
    message += "; the other ranks were stopped"
    finalize_failed_run(cfg.out_dir, message)
    raise RunFailed(f"{message}. Results so far: {cfg.out_dir}; log: {culprit.log}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


_OMPI_SIGNAL = re.compile(r"process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+)")
_OMPI_EXIT = re.compile(r"Process name:\s*\[\[\d+,\d+\],(\d+)\]\s*Exit code:\s*(-?\d+)", re.S)


def mpi_failure(log: str, beats: dict) -> str | None:
    """From Open MPI's banner in mpirun's log: which rank failed, on which host, how (None if not found).
    The host comes from the banner, or else from that rank's heartbeat."""
    m = _OMPI_SIGNAL.search(log)
    if m:
        rank, host, sig = int(m.group(1)), m.group(2), int(m.group(3))
        try:
            how = f"was killed by {signal.Signals(sig).name}"
        except ValueError:
            how = f"was killed by signal {sig}"
        return f"rank {rank} on {host} {how}"
    m = _OMPI_EXIT.search(log)
    if m:
        rank, code = int(m.group(1)), int(m.group(2))
        beat = beats.get(rank)
        where = f" on {beat.host}" if beat else ""
        return f"rank {rank}{where} exited with code {code}"
    return None


def _stuck_ranks(progress: Path, nranks: int) -> str:
    """Name the ranks that are behind (fewest operation calls entered), with their host and the call they
    are in, from each rank's heartbeat (named by world rank)."""
    state = read_heartbeats(progress)
    silent = [r for r in range(nranks) if r not in state]
    if silent:
        return f"rank(s) {', '.join(map(str, silent))} never reported progress (stuck starting up)"
    if not state:
        return "no rank reported progress (stuck starting up)"
    low = min(b.calls for b in state.values())
    behind = sorted(r for r, b in state.items() if b.calls == low)
    first = state[behind[0]]
    if len(behind) == len(state):
        return (f"every rank is in call {low} ({first.phase}); none is behind the others: a library or "
                f"fabric hang")
    where = "; ".join(f"rank {r} on {state[r].host} {_position(state[r])}" for r in behind[:8])
    more = f" and {len(behind) - 8} more" if len(behind) > 8 else ""
    return (f"stuck: {where}{more}; the other ranks entered up to {max(b.calls for b in state.values())} "
            "calls and wait for it")


def _position(beat) -> str:
    if beat.calls > beat.done:
        return f"is in call {beat.calls} ({beat.phase})"
    return f"stopped after call {beat.calls}, before call {beat.calls + 1} ({beat.phase})"


def _stop_all(ranks: list[Rank]) -> None:
    """SIGTERM every rank's process group, then SIGKILL what is left: no orphans."""
    for r in ranks:
        if r.proc.poll() is None:
            _signal_group(r.proc, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(r.proc.poll() is None for r in ranks):
        time.sleep(POLL_S)
    for r in ranks:
        _signal_group(r.proc, signal.SIGKILL)  # also reaps children that outlived their leader
        try:
            r.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
