"""`fabricbench submit` / `collect` as real Slurm jobs on the fabric lab (4 nodes in network namespaces)."""

from __future__ import annotations

import json
import time

import pytest

from fabricbench.results import read_results
from lab_fixture import lab, lab_config  # noqa: F401  (fixtures)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab_config():
    return {"nodes": 4, "leaves": 2, "link_rate": "400mbit"}


def _submit(lab, out, *args, timeout=180):
    return lab.fabricbench("submit", "all_reduce", "--nodes", "4", "-b", "1M", "-e", "2M", "-n", "5", "-w", "2",
                           "--poll", "0.3", "--out", str(out), *args, timeout=timeout)


@pytest.mark.parametrize("backend", ["gloo", "mpi"])
def test_submit_runs_a_real_job_on_4_nodes(lab, tmp_path, backend):
    """gloo: torch rendezvous on the step's first host; mpi: mpi4py through srun --mpi=pmix."""
    out = tmp_path / backend
    res = _submit(lab, out, "--backend", backend)
    assert res.returncode == 0, res.stdout + res.stderr
    # the same table as a local run, and every node accounted for
    assert "# all_reduce:" in res.stdout and "# Avg bus bandwidth" in res.stdout
    assert "4 ranks on 4 hosts, launcher slurm" in res.stdout
    assert "nodes: 4 of 4 allocated reported results" in res.stdout
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "ok" and info["backend"] == backend and info["nranks"] == 4
    assert sorted(info["hosts"]) == sorted(lab.nodes)
    df = read_results(out)
    ops = df[df["row_kind"] == "op"]
    # two sizes, each out-of-place and in-place (gloo's torch ops are in-place only)
    sizes = 2 if backend == "gloo" else 4
    assert len(ops) == sizes and (ops["nnodes"] == 4).all() and (ops["nwrong"] == 0).all()
    assert set(df[df["row_kind"] == "rank"]["host"]) == set(lab.nodes)
    job = json.loads((out / "job.json").read_text())
    assert job["job_id"].isdigit() and (out / f"slurm-{job['job_id']}.out").exists()
    assert "srun --kill-on-bad-exit=1" in (out / "job.sbatch").read_text()
    if backend == "mpi":
        assert "--mpi=pmix" in (out / "job.sbatch").read_text()


def test_no_wait_prints_the_job_id_and_collect_gathers_later(lab, tmp_path):
    out = tmp_path / "later"
    res = _submit(lab, out, "--backend", "gloo", "--no-wait")
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    assert job_id.isdigit()
    res = lab.fabricbench("collect", job_id, "--out", str(out), "--poll", "0.3", timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "# all_reduce:" in res.stdout and "nodes: 4 of 4" in res.stdout
    assert json.loads((out / "run.json").read_text())["status"] == "ok"


def test_a_rank_that_dies_is_named_with_its_node(lab, tmp_path):
    """Rank 2 (on the third node) kills itself: srun stops the step, and the report names rank and node."""
    out = tmp_path / "dies"
    res = _submit(lab, out, "--backend", "gloo", "--env", "FABRICBENCH_INJECT=die@2:after=3")
    assert res.returncode == 1, res.stdout + res.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed"
    assert f"rank 2 on node {lab.nodes[2]}: Killed" in info["error"]
    assert f"rank 2 on node {lab.nodes[2]}" in res.stdout


def test_ctrl_c_cancels_the_job(lab, tmp_path):
    import signal
    import subprocess
    import sys

    from lab_fixture import REPO

    out = tmp_path / "cancel"
    proc = subprocess.Popen([sys.executable, "-m", "fabricbench", "submit", "all_reduce", "--nodes", "4", "-b", "64M",
                             "-e", "64M", "-n", "200", "--backend", "gloo", "--poll", "0.3", "--out", str(out)],
                            env=lab.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job = out / "job.json"
    for _ in range(200):
        if job.exists() and (out / "logs").exists() and list((out / "logs").glob("rank0-*")):
            break
        time.sleep(0.1)
    job_id = json.loads(job.read_text())["job_id"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"cancelled Slurm job {job_id} (scancel)" in err
    for _ in range(100):
        state = lab.run(["squeue", "-h", "-j", job_id, "-o", "%T"]).stdout.strip()
        if state in ("", "CANCELLED"):
            break
        time.sleep(0.2)
    assert state in ("", "CANCELLED"), state
