"""Backends: one module each. `open_backend` picks one ('auto': NCCL on GPUs, gloo otherwise)."""

from __future__ import annotations

import importlib.util

from fabricbench.errors import UsageError

BACKENDS = ("auto", "nccl", "gloo", "mpi", "nccl-direct")


def check_backend_name(name: str) -> str:
    key = name.lower()
    if key not in BACKENDS:
        raise UsageError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    return key


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cuda_available() -> bool:
    """True when torch is installed and sees a GPU (without initialising CUDA in a way that breaks fork)."""
    if not _have("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_backend(name: str) -> str:
    """'auto' -> nccl (GPU) | gloo (CPU); check that the chosen backend's library is installed."""
    key = check_backend_name(name)
    if key == "auto":
        if not _have("torch"):
            if _have("mpi4py"):
                return "mpi"
            raise UsageError("no backend installed: install torch (pip install 'fabricbench[torch]' "
                             "torch==2.13.0) or mpi4py (pip install 'fabricbench[mpi]')")
        return "nccl" if cuda_available() else "gloo"
    if key in ("nccl", "gloo"):
        if not _have("torch"):
            raise UsageError(f"backend '{key}' needs torch, which is not installed: "
                             "pip install 'fabricbench[torch]' (torch 2.13.0 for the CPU build)")
        if key == "nccl":
            import torch

            if not torch.cuda.is_available():
                raise UsageError("backend 'nccl' needs a CUDA GPU and none is visible here; "
                                 "use --backend gloo for CPU ranks")
            if not torch.distributed.is_nccl_available():
                raise UsageError("this torch build has no NCCL; install a CUDA build of torch")
        return key
    if key == "nccl-direct":
        from fabricbench.backends.nccl_direct import available

        why = available()
        if why:
            raise UsageError(why)
        if not _have("torch"):
            raise UsageError("backend 'nccl-direct' uses torch's gloo for its control plane; pip install torch")
        return key
    if not _have("mpi4py"):
        raise UsageError("backend 'mpi' needs mpi4py: pip install 'fabricbench[mpi]' "
                         "(and an MPI library, e.g. apt-get install openmpi-bin libopenmpi-dev)")
    return key


def open_backend(name: str, ranks, timeout_s: float, device: str = "auto"):
    """Create and initialise the backend for this rank (`ranks`: a fabricbench.engine.ranks.RankInfo)."""
    from fabricbench.engine.inject import wrap_with_injected_faults

    if name in ("nccl", "gloo"):
        from fabricbench.backends.torch_dist import TorchBackend

        backend = TorchBackend(name, ranks, timeout_s)
    elif name == "mpi":
        from fabricbench.backends.mpi import MPIBackend

        backend = MPIBackend(ranks, device=device)
    elif name == "nccl-direct":
        from fabricbench.backends.nccl_direct import NcclDirectBackend

        backend = NcclDirectBackend(ranks, timeout_s)
    else:  # pragma: no cover - resolve_backend ran first
        raise UsageError(f"unknown backend '{name}'")
    return wrap_with_injected_faults(backend)


def unsupported(name: str, dtype, redop: str | None) -> str | None:
    """Checked before any rank starts: why backend `name` cannot run `dtype` with `redop` (None: it can)."""
    if name in ("nccl", "gloo"):
        from fabricbench.backends.torch_dist import unsupported as torch_unsupported

        return torch_unsupported(name, dtype, redop)
    if name == "nccl-direct":
        from fabricbench.backends.nccl_direct import unsupported as nccl_unsupported

        return nccl_unsupported(dtype, redop)
    from fabricbench.backends.mpi import unsupported as mpi_unsupported

    return mpi_unsupported(dtype, redop)
