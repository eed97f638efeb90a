"""`fabricbench tune --backend mpi` across the 4 nodes of the fabric lab through `srun --mpi=pmix`: a candidate's
environment reaches every remote rank (its injected corruption is caught by the check and the candidate is
rejected and named), and the provenance names the four nodes. The full halving-vs-exhaustive comparison on the
lab is benchmarks/tune.py (too slow for CI)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from lab_fixture import lab, lab_config, lab_factory  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.lab, pytest.mark.mpi]


@pytest.fixture(scope="module")
def lab_config():  # noqa: F811
    return {"nodes": 4, "leaves": 2, "link_rate": "400mbit"}


def test_tune_over_srun_rejects_a_corrupting_candidate_on_remote_ranks(lab, tmp_path):  # noqa: F811
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install mpi4py)")
    out = tmp_path / "tuning"
    proc = lab.run([sys.executable, "-m", "fabricbench", "tune", "all_reduce", "--backend", "mpi",
                    "--launcher", "srun -N4 --mpi=pmix", "-b", "64K", "-e", "64K", "-n", "3", "-w", "1",
                    "--only", "allreduce=nonoverlapping", "--inject-candidate", "allreduce=nonoverlapping=corrupt@3",
                    "--confirm-pairs", "2", "--out", str(out)], timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "tuning.json").read_text())
    assert summary["provenance"]["topology"]["hosts"] == ["lab1", "lab2", "lab3", "lab4"]
    assert summary["provenance"]["topology"]["nranks"] == 4
    assert "wrong-data" in summary["ops"][0]["rejected"]["allreduce=nonoverlapping"]  # rank 3 runs on lab4
    assert [d["effective"] for d in summary["decisions"]] == ["default"]
