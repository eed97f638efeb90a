"""Node-local checks. Each is one small registered entry (like an op): `@register(name, description)` on a
function `(Sources) -> CheckResult`. A check reads only from the roots it is given (a sysfs tree, saved tool
outputs), so it runs the same on a live node and on a CPU machine from saved trees; none sends network traffic.

A check never passes silently: what it could not look at is listed in `not_checked`, and a check that could
look at nothing is `unknown`, never `pass`.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

STATUSES = ("pass", "warn", "fail", "unknown")


@dataclass
class Finding:
    """One thing a check looked at: a GPU, an NVLink, a PCIe link, a port."""

    component: str  # "gpu0", "gpu0/nvlink3", "pcie/0000:17:00.0", "mlx5_0:1"
    kind: str  # gpu | nvlink | pcie | port | node
    status: str  # pass | warn | fail | unknown
    detail: str
    metric: str | None = None  # what `value` is, with its unit in the name (e.g. "link_width_lanes")
    value: float | None = None
    expected: float | None = None


@dataclass
class CheckResult:
    name: str
    status: str
    summary: str
    findings: list[Finding] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    compared_with: str = ""  # what the measured facts were judged against (topology, capability, history)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sources:
    """Where checks read from. Paths of saved tool outputs are optional; None means 'not given'."""

    sysfs_root: Path = Path("/sys")
    nvidia_smi_q: Path | None = None  # saved `nvidia-smi -q`
    nvlink_status: Path | None = None  # saved `nvidia-smi nvlink -s`
    ib_ports: Path | None = None  # saved ibstat / ibstatus / ibv_devinfo (else sysfs)
    kernel_log: Path | None = None  # kernel log text (dmesg, kern.log, journalctl -k)
    state_dir: Path | None = None  # where checks remember things between runs (XID log position)
    node_type: object = None  # fabricbench.topology NodeType: what this node should have
    live: bool = False  # allowed to run nvidia-smi / NVML on this machine when no saved output is given


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    fn: Callable[[Sources], CheckResult]


CHECKS: dict[str, Check] = {}
_MODULES = ("gpus", "nvlink", "pcie", "ports", "xid", "ecc")


def register(name: str, description: str):
    def deco(fn):
        CHECKS[name] = Check(name, description, fn)
        return fn

    return deco


def all_checks() -> dict[str, Check]:
    for mod in _MODULES:
        importlib.import_module(f"fabricbench.health.checks.{mod}")
    return CHECKS


def worst(statuses) -> str:
    """fail > warn > unknown > pass for a summary; an empty list is unknown (nothing was checked)."""
    statuses = list(statuses)
    for s in ("fail", "warn", "unknown"):
        if s in statuses:
            return s
    return "pass" if statuses else "unknown"


def read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def tool_text(saved: Path | None, live: bool, argv: list[str], timeout_s: float = 20.0) -> tuple[str | None, str]:
    """A tool's output: the saved file when given, else (live only) the tool run here. Returns (text, how)."""
    if saved is not None:
        text = read_text(saved)
        return text, (f"{' '.join(argv)} saved in {saved}" if text is not None else f"{saved} is not readable")
    if not live:
        return None, f"no saved '{' '.join(argv)}' output given"
    import shutil
    import subprocess

    if shutil.which(argv[0]) is None:
        return None, f"{argv[0]} is not on PATH"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"{' '.join(argv)} failed ({type(err).__name__})"
    if proc.returncode != 0:
        return None, f"{' '.join(argv)} exited {proc.returncode}: {' '.join(proc.stderr.split())[:120]}"
    return proc.stdout, " ".join(argv)
