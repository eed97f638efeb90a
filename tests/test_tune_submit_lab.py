"""`fabricbench tune --submit` on the fabric lab: one real Slurm batch job on 4 lab nodes; the tuning driver runs
on the batch host and every candidate is an srun step (--mpi=pmix) across the allocation; the submitting process
follows the job and prints the decisions from the directory the job wrote."""

from __future__ import annotations

import importlib.util
import json

import pytest

from lab_fixture import lab, lab_config  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.lab, pytest.mark.mpi]


@pytest.fixture(scope="module")
def lab_config():  # noqa: F811
    return {"nodes": 4, "leaves": 2, "link_rate": "400mbit"}


def test_tune_submit_runs_the_candidates_as_srun_steps_of_one_batch_job(lab, tmp_path):  # noqa: F811
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install mpi4py)")
    out = tmp_path / "tuning"
    proc = lab.fabricbench("tune", "all_reduce", "--backend", "mpi", "--submit", "--nodes", "4", "-b", "64K",
                           "-e", "64K", "-n", "2", "-w", "1", "--only", "allreduce=ring", "--confirm-pairs", "2",
                           "--budget", "5m", "--poll", "0.3", "--out", str(out), timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    script = (out / "job.sbatch").read_text()
    assert "#SBATCH --nodes=4" in script and "#SBATCH --time=12" in script
    assert "--launcher 'srun --kill-on-bad-exit=1 --ntasks-per-node=1 --mpi=pmix'" in script
    job = json.loads((out / "job.json").read_text())
    assert job["kind"] == "tune" and job["job_id"].isdigit()
    summary = json.loads((out / "tuning.json").read_text())
    assert summary["provenance"]["topology"]["hosts"] == ["lab1", "lab2", "lab3", "lab4"]
    assert summary["spec"]["launcher"][:1] == ["srun"]
    assert f"job {job['job_id']}: tuned on 4 ranks, 4 node(s): lab1, lab2, lab3, lab4" in proc.stdout
    assert "all_reduce      65536 B:" in proc.stdout
    # every run was a step of this job (srun inside the allocation), each with its own results
    runs = [json.loads(p.read_text()) for p in (out / "runs").rglob("run.json")]
    # at least the defaults and the ring candidate; confirmation pairs and the resource stage add runs only when
    # the search saw a gain worth confirming, which on the lab's noisy CPU ranks varies from run to run
    assert len(runs) >= 2 and all(sorted(r["hosts"]) == ["lab1", "lab2", "lab3", "lab4"] for r in runs)
    # the driver ran inside the job: its plan and per-run lines are in the batch log
    log = (out / f"slurm-{job['job_id']}.out").read_text()
    assert "estimated cost:" in log and "confirm" in log and "tune finished with exit code 0" in log
