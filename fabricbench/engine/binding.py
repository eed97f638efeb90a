"""CPU binding of a GPU rank to the NUMA node of its GPU (as nccl-tests users do with numactl or Slurm's
--cpu-bind): a rank whose host thread runs on the far socket adds cross-socket latency to every launch.

The GPU's PCI device in sysfs lists the CPUs local to it (`local_cpulist`); the rank is bound to those that
it is allowed to use (a cgroup or Slurm may already have narrowed the set: then the intersection, and nothing
when that is empty).
"""

from __future__ import annotations

import os
from pathlib import Path


def parse_cpulist(text: str) -> set[int]:
    """'0-3,8,10-11' -> {0, 1, 2, 3, 8, 10, 11} (the kernel's cpulist format)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return cpus


def normalize_bus_id(bus_id: str) -> str:
    """nvidia-smi/CUDA write '00000000:1B:00.0'; sysfs uses '0000:1b:00.0'."""
    domain, rest = bus_id.strip().lower().split(":", 1)
    return f"{int(domain, 16):04x}:{rest}"


def gpu_local_cpus(bus_id: str, sysfs: str | os.PathLike = "/sys") -> set[int] | None:
    path = Path(sysfs) / "bus" / "pci" / "devices" / normalize_bus_id(bus_id) / "local_cpulist"
    try:
        return parse_cpulist(path.read_text())
    except (OSError, ValueError):
        return None


def plan_binding(bus_id: str | None, allowed: set[int], sysfs: str | os.PathLike = "/sys") -> tuple[set[int] | None, str]:
    """The CPUs to bind to (None: leave as is) and a short reason for run.json."""
    if not bus_id:
        return None, "no GPU: not bound"
    local = gpu_local_cpus(bus_id, sysfs)
    if not local:
        return None, f"no local_cpulist for GPU {bus_id}: not bound"
    chosen = local & allowed
    if not chosen:
        return None, "the GPU's local CPUs are outside this process's allowed set (cgroup/Slurm): not bound"
    if chosen == allowed:
        return None, "already bound to the GPU's local CPUs"
    return chosen, f"bound to the {len(chosen)} CPUs local to GPU {bus_id}"


# The allowed set before fabricbench narrowed it (an early binding on a guessed GPU must not shrink what the
# authoritative binding may choose from).
_ORIGINAL_ALLOWED: set[int] | None = None
_EARLY: tuple[str, set[int]] | None = None  # (bus id, cpus) of the binding done before the backend started


def thread_ids(task_dir: str | os.PathLike = "/proc/self/task") -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(task_dir) if t.isdigit())
    except OSError:
        return [0]


def bind_all_threads(cpus: set[int], task_dir: str | os.PathLike = "/proc/self/task") -> int:
    """sched_setaffinity(0) binds only the calling thread; NCCL's proxy threads, torch's watchdog and the CUDA
    driver's threads started before it keep the old mask. Bind every thread of the process; returns how
    many now run on `cpus`."""
    bound = 0
    for tid in thread_ids(task_dir):
        try:
            os.sched_setaffinity(tid, cpus)
            bound += 1
        except (ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            continue
    return bound


def bind_to_gpu(bus_id: str | None, sysfs: str | os.PathLike = "/sys") -> str:
    """Bind every thread of this process to the CPUs local to `bus_id` (`plan_binding`); returns what was
    done. Called once the backend knows its GPU; after an early binding (`bind_early`) to the same GPU this
    only catches threads that escaped it."""
    global _ORIGINAL_ALLOWED
    allowed = _ORIGINAL_ALLOWED if _ORIGINAL_ALLOWED is not None else os.sched_getaffinity(0)
    cpus, reason = plan_binding(bus_id, allowed, sysfs)
    if not cpus:
        if _EARLY is not None and _ORIGINAL_ALLOWED is not None:  # the early guess does not hold: undo it
            bind_all_threads(_ORIGINAL_ALLOWED)
        return reason
    _ORIGINAL_ALLOWED = set(allowed)
    n = bind_all_threads(cpus)
    early = _EARLY is not None and _EARLY[1] == cpus
    return reason + (" before the backend started" if early else "") + f" (all {n} threads of the process)"


def bind_early(local_rank: int, environ=None, sysfs: str | os.PathLike = "/sys",
               proc: str | os.PathLike = "/proc") -> str | None:
    """Before torch is imported and NCCL starts its threads: bind to the CPUs of the GPU this local rank will
    use, found without initialising CUDA (fabricbench.engine.gpu_inventory). Threads created later inherit
    the mask. Returns what was done, or None when the GPU cannot be known yet (bind_to_gpu does it later)."""
    global _ORIGINAL_ALLOWED, _EARLY
    from fabricbench.engine.gpu_inventory import guess_bus_id

    bus = guess_bus_id(local_rank, environ, proc)
    if bus is None:
        return None
    allowed = os.sched_getaffinity(0)
    cpus, reason = plan_binding(bus, allowed, sysfs)
    if not cpus:
        return reason
    _ORIGINAL_ALLOWED = set(allowed)
    bind_all_threads(cpus)
    _EARLY = (bus, cpus)
    return reason
