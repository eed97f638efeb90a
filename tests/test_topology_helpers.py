"""Helpers shared by tests/test_topology_*.py (this module holds no tests of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def fixtures_root() -> Path | None:
    for candidate in (REPO.parent / "shared" / "fixtures" / "tool-outputs", Path("/work/shared/fixtures/tool-outputs")):
        if candidate.is_dir():
            return candidate
    return None


def topo_cli(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m fabricbench.topology ARGS`: the topo commands with fabricbench's error handling, without
    importing the other areas (tests/test_topology_cli.py also runs the real `python -m fabricbench topo`)."""
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([sys.executable, "-m", "fabricbench.topology", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or REPO)


def assert_usage_error(res: subprocess.CompletedProcess, *fragments: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fabricbench: error:"), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err
