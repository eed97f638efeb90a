"""The GPUs this process will see, found without initialising CUDA (no torch, no driver call): for the
launcher's check of ranks per node and for binding a rank to its GPU's CPUs before NCCL starts threads.

The NVIDIA driver lists every GPU as /proc/driver/nvidia/gpus/<PCI bus id>/; sorted by bus id that is
nvidia-smi's (NVML's) order. CUDA's own order (CUDA_DEVICE_ORDER=FASTEST_FIRST, the default) equals it on
servers whose GPUs are all the same model (ties are broken by PCI bus id); the binding made from this guess
is checked against the bus id CUDA reports once the backend is up (engine.binding.bind_to_gpu).
"""

from __future__ import annotations

import os
from pathlib import Path


def physical_gpus(proc: str | os.PathLike = "/proc") -> list[str] | None:
    """PCI bus ids of the node's NVIDIA GPUs in bus order, or None when the driver's directory is absent."""
    root = Path(proc) / "driver" / "nvidia" / "gpus"
    try:
        return sorted(p.name.lower() for p in root.iterdir() if ":" in p.name)
    except OSError:
        return None


def _visible_entries(environ) -> list[str] | None:
    text = environ.get("CUDA_VISIBLE_DEVICES")
    if text is None:
        return None
    entries = []
    for part in text.split(","):
        part = part.strip()
        if not part or part.startswith("-"):  # CUDA stops at the first invalid entry
            break
        entries.append(part)
    return entries


def visible_gpu_count(environ=None, proc: str | os.PathLike = "/proc") -> int | None:
    """How many GPUs CUDA will show this process, or None when that cannot be told without CUDA."""
    env = os.environ if environ is None else environ
    gpus = physical_gpus(proc)
    entries = _visible_entries(env)
    if entries is None:
        return len(gpus) if gpus is not None else None
    if gpus is None:
        return len(entries)
    if all(e.isdigit() for e in entries):
        return len([e for e in entries if int(e) < len(gpus)])
    return min(len(entries), len(gpus))


def guess_bus_id(index: int, environ=None, proc: str | os.PathLike = "/proc") -> str | None:
    """The PCI bus id of CUDA device `index` of this process (see the module's note), or None."""
    env = os.environ if environ is None else environ
    if env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") not in ("PCI_BUS_ID", "FASTEST_FIRST"):
        return None
    gpus = physical_gpus(proc)
    if not gpus:
        return None
    entries = _visible_entries(env)
    if entries is None:
        order = list(range(len(gpus)))
    elif all(e.isdigit() for e in entries):
        order = [int(e) for e in entries]
    else:  # GPU-... UUIDs or MIG ids: only CUDA can map them
        return None
    if index >= len(order) or order[index] >= len(gpus):
        return None
    return gpus[order[index]]
