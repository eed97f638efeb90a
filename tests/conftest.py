from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fixtures_root() -> Path | None:
    for candidate in (REPO.parent / "shared" / "fixtures" / "tool-outputs", Path("/work/shared/fixtures/tool-outputs")):
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture
def fixtures_dir() -> Path:
    root = _fixtures_root()
    if root is None:
        pytest.skip("shared tool-output fixtures are not present next to this checkout")
    return root


def run_cli(*args: str, env: dict | None = None, timeout: float = 240, cwd: Path | None = None):
    """Run `python -m fabricbench ARGS` as a user would; returns the CompletedProcess (text)."""
    full_env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_JOB_ID", "SLURM_STEP_ID", "OMPI_COMM_WORLD_RANK",
                "PMI_RANK", "PMIX_RANK", "FABRICBENCH_INJECT"):
        full_env.pop(key, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "fabricbench", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or REPO)
