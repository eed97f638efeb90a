"""`fabricbench nvlink` and `fabricbench selftest --gpu` as a user runs them, on the fake GPU interface
(FABRICBENCH_GPU_API=fake:spec.json): output, files, exit codes; and the refusals (no GPU, one GPU for a pair
test, no peer access, too little memory, bad options): one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from fabricbench.results.io import read_results


def gpu_cli(*args, env=None, cwd=None):
    """The GPU commands through their own entry point (python -m fabricbench.gpu: same commands, same error
    handling), so that another area's unfinished import cannot break these tests."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                "SLURM_JOB_ID", "SLURM_STEP_ID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "fabricbench.gpu", *args], capture_output=True, text=True,
                          timeout=120, env=full_env, cwd=cwd or REPO)


def fake(tmp_path, **spec) -> dict:
    path = tmp_path / "gpu-spec.json"
    path.write_text(json.dumps(spec))
    return {"FABRICBENCH_GPU_API": f"fake:{path}"}


SMALL = ["--size", "64K", "--loops", "2", "--samples", "2", "--latency-hops", "10"]


def test_the_fabricbench_command_registers_the_gpu_area():
    from fabricbench.gpu.cli import register
    import typer

    app = typer.Typer()
    register(app)
    names = sorted(c.name for c in app.registered_commands)
    assert names == ["ib", "nvlink", "selftest"]
    text = (REPO / "fabricbench" / "cli.py").read_text()
    assert '"fabricbench.gpu.cli"' in text


def test_nvlink_prints_labelled_matrices_and_writes_gpu_pair_rows(tmp_path):
    out = tmp_path / "out"
    proc = gpu_cli("nvlink", *SMALL, "--out", str(out), env=fake(tmp_path, ngpus=2, pair_gbps={"1,0": 123.0}))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "FAKE GPU INTERFACE (testing only): sm_read: GPU(row) -> GPU(column) bandwidth (GB/s)" in text
    assert "sm_write: GPU(row) <- GPU(column) bandwidth (GB/s)" in text
    assert "ce_bidir: GPU(row) <-> GPU(column) bandwidth (GB/s)" in text
    assert "latency: GPU(row) reads GPU(column) latency (ns per access)" in text
    assert "bytes copied per second" in text
    assert "verify: 12 pair measurement(s), 24 sample(s), every destination word correct" in text
    frame = read_results(out)
    assert len(frame) == 14 and set(frame.row_kind) == {"gpu_pair"}
    cell = frame[(frame.kind == "sm_read") & (frame.matrix_row == 0)].iloc[0]
    assert (cell.src_gpu, cell.dst_gpu) == (1, 0) and cell.gbps == pytest.approx(123.0)
    run = json.loads((out / "run.json").read_text())
    assert run["fake_gpu_interface"] is True and run["command"] == "nvlink"
    assert "bytes copied per second" in run["conventions"]["bandwidth"]


def test_nvlink_wrong_data_exits_1_and_names_the_link(tmp_path):
    proc = gpu_cli("nvlink", *SMALL, "--kinds", "ce_read", "--out", str(tmp_path / "o"),
                   env=fake(tmp_path, ngpus=2, corrupt=[[1, 0]]))
    assert proc.returncode == 1
    assert "WRONG DATA" in proc.stdout and "ce_read GPU 1 -> GPU 0" in proc.stdout
    frame = read_results(tmp_path / "o")
    assert sorted(frame.status) == ["ok", "wrong-data"]


@pytest.mark.parametrize("spec, args, message", [
    ({"ngpus": 1}, [], "needs 2 or more GPUs; this machine has 1"),
    ({"ngpus": 2, "no_peer": [[0, 1]]}, [], "peer access is unavailable between every pair of GPUs 0,1"),
    ({"ngpus": 3, "no_peer": [[1, 2]]}, ["--gpus", "0,1,2"], "peer access between GPU 1 and GPU 2 is unavailable"),
    ({"ngpus": 2, "devices": [{"free_bytes": 1 << 20}, {}]}, ["--size", "1G"], "only 0.00 GiB of 1.00 GiB is free"),
    ({"ngpus": 2}, ["--gpus", "0,4"], "GPU 4 does not exist"),
    ({"ngpus": 2}, ["--kinds", "sm_read,nope"], "--kinds: unknown nope"),
    ({"ngpus": 2}, ["--size", "100"], "multiple of 16 bytes"),
    ({"ngpus": 2}, ["--size", "1.5G"], "is not a size"),
    ({"ngpus": 2}, ["--loops", "0"], "--loops must be at least 1"),
])
def test_nvlink_refusals_are_one_line_exit_2(tmp_path, spec, args, message):
    proc = gpu_cli("nvlink", *args, "--out", str(tmp_path / "o"), env=fake(tmp_path, **spec))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_no_gpu_is_a_one_line_error_for_every_command(tmp_path):
    """The real interface on this machine: no CuPy or no GPU -> exit 2, one line. (Skipped where a GPU is.)"""
    try:
        import cupy  # noqa: F401

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a CUDA GPU is present: the no-GPU path cannot be seen here")
    except Exception:
        pass
    env = {"FABRICBENCH_GPU_API": ""}
    for args in (["nvlink", "--out", str(tmp_path / "a")], ["selftest", "--gpu", "--out", str(tmp_path / "b")]):
        proc = gpu_cli(*args, env=env)
        assert proc.returncode == 2, proc.stderr
        assert "no CUDA GPU" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_selftest_needs_gpu_flag_and_writes_the_reference(tmp_path):
    proc = gpu_cli("selftest", env=fake(tmp_path))
    assert proc.returncode == 2 and "--gpu" in proc.stderr
    out = tmp_path / "reference"
    proc = gpu_cli("selftest", "--gpu", "--size", "1M", "--pair-size", "64K", "--loops", "1", "--samples", "1",
                   "--out", str(out), env=fake(tmp_path, devices=[{"name": "NVIDIA H200"}]))
    assert proc.returncode == 0, proc.stderr
    assert "FAKE GPU INTERFACE" in proc.stdout.splitlines()[0]
    assert "PASS  planted-mismatch GPU 0" in proc.stdout
    assert "SKIP  pairs: one GPU: peer access to the same device is not a peer path" in proc.stdout
    report = json.loads((out / "FAKE_NVIDIA_H200.json").read_text())
    assert report["ok"] and report["devices"][0]["name"] == "NVIDIA H200"


def test_selftest_with_a_blind_verify_exits_1(tmp_path):
    """A fake whose copies between GPUs corrupt data: the pair part of the self-test fails the run."""
    proc = gpu_cli("selftest", "--gpu", "--size", "1M", "--pair-size", "64K", "--loops", "1", "--samples", "1",
                   "--out", str(tmp_path / "r"), env=fake(tmp_path, ngpus=2, corrupt=[[0, 1]]))
    assert proc.returncode == 1
    assert "FAIL  pairs" in proc.stdout and "SELFTEST FAILED" in proc.stdout
