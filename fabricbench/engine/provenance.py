"""What run.json records about where and how a run happened: versions, hosts, environment, NCCL config files."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

# Variables that change how the libraries behave; recorded as each rank saw them.
ENV_PREFIXES = ("NCCL_", "UCX_", "OMPI_", "FI_", "GLOO_", "TORCH_NCCL_", "CUDA_VISIBLE_DEVICES", "MASTER_",
                "SLURM_", "PMIX_", "PMI_", "FABRICBENCH_")
NCCL_CONF_FILES = ("/etc/nccl.conf", "~/.nccl.conf")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def relevant_env(env=None) -> dict[str, str]:
    env = os.environ if env is None else env
    return {k: v for k, v in sorted(env.items()) if k.startswith(ENV_PREFIXES) and k != "FABRICBENCH_CONFIG"}


def rank_info(ranks, backend) -> dict:
    """One rank's view: host, pid, GPU, CPU affinity, environment."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = []
    return {
        "rank": ranks.rank, "host": ranks.host, "local_rank": ranks.local_rank, "pid": os.getpid(),
        "gpu": backend.gpu, "cpu_affinity": _ranges(cpus), "env": relevant_env(),
    }


def _ranges(cpus: list[int]) -> str:
    out, start, prev = [], None, None
    for c in cpus + [None]:
        if start is None:
            start = prev = c
        elif c is not None and c == prev + 1:
            prev = c
        else:
            out.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = c
    return ",".join(out)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> dict:
    if not shutil.which("nvidia-smi"):
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    first = out.strip().splitlines()[0].split(",") if out.strip() else []
    return {"driver": first[0].strip(), "gpu_model": first[1].strip()} if len(first) >= 2 else {}


def versions(backend) -> dict:
    info = {
        "fabricbench": _version("fabricbench"), "python": platform.python_version(),
        "numpy": _version("numpy"), "torch": _version("torch"), "mpi4py": _version("mpi4py"),
        "platform": platform.platform(),
    }
    info.update(_nvidia_smi())
    info.update({k: v for k, v in backend.versions().items() if v is not None})
    return {k: v for k, v in info.items() if v is not None}


def nccl_conf_files() -> dict[str, str]:
    out = {}
    for name in NCCL_CONF_FILES:
        path = Path(name).expanduser()
        try:
            out[str(path)] = path.read_text(errors="replace")
        except OSError:
            continue
    return out


def run_record(cfg, ranks_info: list[dict], backend, started: str) -> dict:
    """The run.json body (status fields are added by the caller)."""
    envs = [r.pop("env") for r in ranks_info]
    same = all(e == envs[0] for e in envs)
    return {
        "run_id": cfg.run_id,
        "command_line": cfg.command_line or [Path(sys.argv[0]).name, *sys.argv[1:]],
        "config": {k: v for k, v in cfg.__dict__.items() if k not in ("command_line",)},
        "backend": backend.name, "device": backend.device, "placement_note": backend.placement_note,
        "nranks": len(ranks_info), "hosts": sorted({r["host"] for r in ranks_info}),
        "ranks": ranks_info,
        "env": envs[0] if same else None, "env_per_rank": None if same else envs,
        "versions": versions(backend),
        "nccl_conf_files": nccl_conf_files(),
        "launcher_host": socket.gethostname(),
        "start_time": started,
    }
