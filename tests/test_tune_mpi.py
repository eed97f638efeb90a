"""`fabricbench tune` with the real Open MPI on local ranks: the rules file we write is read and applied by
Open MPI itself (through `run --tuning DIR`), and the CLI loop runs end to end with a corrupting candidate."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fabricbench.results.io import atomic_write_json, atomic_write_text
from fabricbench.tune import ompi_rules
from fabricbench.tune.outputs import MCA_FILE, RULES_FILE, Decision, mca_env, ompi_rules_for

from tests.conftest import run_cli

pytestmark = pytest.mark.mpi
_MISSING = [why for missing, why in (
    (shutil.which("mpirun") is None, "mpirun is not on PATH (apt-get install openmpi-bin)"),
    (importlib.util.find_spec("mpi4py") is None, "mpi4py is not installed (pip install mpi4py)"),
) if missing]
needs_mpi = pytest.mark.skipif(bool(_MISSING), reason="; ".join(_MISSING) or "mpi present")
YIELD = {"OMPI_MCA_mpi_yield_when_idle": "1"}


def _tuning_dir(path: Path, algorithm_from_8k: int) -> Path:
    """A tuning directory as `tune` writes it: all_gather linear below 8 KiB, `algorithm_from_8k` from 8 KiB."""
    ds = [Decision("all_gather", 1024, "allgather=linear", {"algorithm": 1}, "g"),
          Decision("all_gather", 8192, "x", {"algorithm": algorithm_from_8k}, "g")]
    rules = ompi_rules_for(ds, nranks=4)
    atomic_write_text(path / RULES_FILE, ompi_rules.render(rules, {0: "allgather"}))
    atomic_write_text(path / MCA_FILE, "".join(f"{k}={v}\n" for k, v in mca_env(path / RULES_FILE).items()))
    atomic_write_json(path / "tuning.json", {"decisions": []})
    return path


@needs_mpi
def test_open_mpi_applies_our_rules_file_by_message_size(tmp_path):
    """two_proc (allgather algorithm 6) cannot run on 4 ranks: selected from 8 KiB by our rules file, the 1 KiB
    size runs (linear) and the 8 KiB size fails, so Open MPI read the file and used 'last entry <= size'.
    The control, ring (4) from 8 KiB, passes every size."""
    bad = _tuning_dir(tmp_path / "bad", 6)
    out = tmp_path / "run-bad"
    proc = run_cli("run", "all_gather", "--backend", "mpi", "--nprocs", "4", "-b", "1K", "-e", "8K", "-f", "8",
                   "-n", "2", "-w", "1", "--out", str(out), "--tuning", str(bad), env=YIELD, timeout=180)
    assert proc.returncode == 1, proc.stdout[-1500:] + proc.stderr[-1500:]
    rows = pd.read_parquet(out / "results.parquet")
    ok = rows[(rows.row_kind == "op") & (rows.status == "ok")]
    assert set(ok.size_bytes) == {1024}  # both placements of 1 KiB; neither of 8 KiB
    good = _tuning_dir(tmp_path / "good", 4)
    out = tmp_path / "run-good"
    proc = run_cli("run", "all_gather", "--backend", "mpi", "--nprocs", "4", "-b", "1K", "-e", "8K", "-f", "8",
                   "-n", "2", "-w", "1", "--out", str(out), "--tuning", str(good), env=YIELD, timeout=180)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    run = json.loads((out / "run.json").read_text())
    env = run["env"] or run["env_per_rank"][0]  # ranks differ in OMPI_COMM_WORLD_* variables
    assert env["OMPI_MCA_coll_tuned_dynamic_rules_filename"] == str((good / RULES_FILE).resolve())


@needs_mpi
def test_tune_cli_rejects_a_corrupting_candidate_and_keeps_the_defaults(tmp_path):
    out = tmp_path / "tuning"
    proc = run_cli("tune", "all_reduce", "--backend", "mpi", "--nprocs", "2", "-b", "64K", "-e", "64K", "-n", "2",
                   "-w", "1", "--only", "allreduce=ring", "--inject-candidate", "allreduce=ring=corrupt@1",
                   "--confirm-pairs", "2", "--out", str(out), env=YIELD, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "allreduce=ring" in proc.stdout and "REJECTED (wrong-data" in proc.stdout
    assert "estimated cost:" in proc.stdout
    summary = json.loads((out / "tuning.json").read_text())
    assert "wrong-data" in summary["ops"][0]["rejected"]["allreduce=ring"]
    assert [d["effective"] for d in summary["decisions"]] == ["default"]
    assert ompi_rules.parse((out / RULES_FILE).read_text()) == {}
    verify = run_cli("tune", "verify", str(out), env=YIELD, timeout=60)
    assert verify.returncode == 0 and "nothing to verify" in verify.stdout


def test_gloo_says_there_is_nothing_to_tune_and_bad_input_is_one_line():
    proc = run_cli("tune", "--backend", "gloo")
    assert proc.returncode == 0 and "gloo has nothing to tune" in proc.stdout
    proc = run_cli("tune", "--backend", "mpi", "--budget", "soon")
    assert proc.returncode == 2 and "--budget 'soon'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("tune", "verify")
    assert proc.returncode == 2 and "usage: fabricbench tune verify DIR" in proc.stderr
    proc = run_cli("run", "--tuning", "/nonexistent-tuning-dir", "--nprocs", "2")
    assert proc.returncode == 2 and "not a tuning directory" in proc.stderr
