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


def bind_to_gpu(bus_id: str | None, sysfs: str | os.PathLike = "/sys") -> str:
    """Apply `plan_binding` to this process; returns what was done."""
    allowed = os.sched_getaffinity(0)
    cpus, reason = plan_binding(bus_id, allowed, sysfs)
    if cpus:
        os.sched_setaffinity(0, cpus)
    return reason
