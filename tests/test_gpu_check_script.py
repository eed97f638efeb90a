"""benchmarks/gpu_check.sh's control flow on the CPU: `fabricbench` on PATH is a stand-in that sends the GPU
commands (selftest, nvlink) to the real ones on the fake GPU interface and fakes `run` (a planted failure
included), with a fake nvidia-smi (one GPU, small memory), mpirun and nvcc. A failing step is recorded and
the rest still run; sizes are capped to the reported memory; every output is under $OUT; the summary is
printed last; a step that overruns is cut at its limit and the spent budget skips the rest."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"

FAKE_FABRICBENCH = r'''#!PYTHON
import json, os, subprocess, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(args) + "\n")
def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default
if os.environ.get("FAKE_SLEEP_ON") == args[0]:
    time.sleep(60)
if args[0] in ("selftest", "nvlink", "ib"):  # the real commands, on the fake GPU interface
    os.execv(sys.executable, [sys.executable, "-m", "fabricbench.gpu", *args])
if args[:2] == ["run", "--help"]:
    print("--backend [auto|nccl|gloo|mpi" + ("|nccl-direct" if os.environ.get("FAKE_DIRECT") else "") + "]")
    sys.exit(0)
if args[0] == "tune":
    print("fabricbench: error: No such command 'tune'.", file=sys.stderr)
    sys.exit(2)
if args[0] == "run":
    if "--timing" in args and opt("--backend") == "nccl":
        print("fabricbench: error: rank 0 (pid 1) exited with code 1: planted failure", file=sys.stderr)
        sys.exit(1)
    import pyarrow as pa, pyarrow.parquet as pq
    out = opt("--out")
    os.makedirs(out, exist_ok=True)
    ops = [a for a in args[1:] if not a.startswith("-")][:1]
    rows = [{"row_kind": "op", "op": "all_reduce", "size_bytes": s, "nranks": int(opt("--nprocs", 1)),
             "busbw_gbps": s / 1e6, "time_us": 10.0 + s / 1e6} for s in (8, 1 << 20)]
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(out, "results.parquet"))
    json.dump({"status": "ok", "fake": True}, open(os.path.join(out, "run.json"), "w"))
    print(f"# fake run {' '.join(args)}")
    sys.exit(0)
sys.exit(3)
'''


def _bin(tmp_path: Path) -> Path:
    b = tmp_path / "bin"
    b.mkdir()
    (b / "fabricbench").write_text(FAKE_FABRICBENCH.replace("PYTHON", sys.executable))
    (b / "nvidia-smi").write_text("#!/bin/sh\n"
                                  'case "$*" in *query-gpu*) echo "FAKE H100, 81559, 64";; '
                                  '*) echo "GPU 0: FAKE H100 (UUID: GPU-0)";; esac\n')
    (b / "mpirun").write_text("#!/bin/sh\necho 'mpirun (Open MPI) 4.1'\n")
    (b / "python-with-cupy").write_text(f'#!/bin/sh\nexport PYTHONPATH="{b / "mods"}:$PYTHONPATH"\n'
                                        f'exec {sys.executable} "$@"\n')
    (b / "mods").mkdir()
    (b / "mods" / "cupy.py").write_text("# stand-in: the check only tests that it imports\n")
    (b / "nvcc").write_text("#!/bin/sh\n"
                            'if [ "$1" = "--version" ]; then echo "Cuda compilation tools, release 13.0, V13.0.1"; '
                            'exit 0; fi\nfor a in "$@"; do :; done\ntouch "$a"\n')
    for f in b.iterdir():
        if f.is_file():
            f.chmod(0o755)
    return b


def _run(tmp_path, **env):
    out = tmp_path / "out"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"devices": [{"name": "FAKE H100", "total_bytes": 1 << 30,
                                             "free_bytes": 1 << 30}]}))
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "SLURM_", "OMPI_"))}
    full.update(PATH=f"{_bin(tmp_path)}:{os.environ['PATH']}", OUT=str(out), FAKE_LOG=str(tmp_path / "calls.log"),
                FABRICBENCH_GPU_API=f"fake:{spec}", GPU_CHECK_SYSFS=str(tmp_path / "sys"),
                GPU_CHECK_TUNER_DIR=str(tmp_path / "no-tuner"), GPU_CHECK_SKIP="pytest-gpu",
                PYTHON=str(tmp_path / "bin" / "python-with-cupy"))
    full.pop("FABRICBENCH", None)
    full.update(env)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=240, env=full, cwd=tmp_path)
    steps = {r["step"]: r for r in csv.DictReader((out / "steps.tsv").open(), delimiter="\t")}
    return proc, out, steps


def test_every_step_runs_and_records_a_failure_without_stopping(tmp_path):
    proc, out, steps = _run(tmp_path, FAKE_DIRECT="1", GPU_CHECK_SKIP="pytest-gpu,versions")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one step failed
    status = {k: v["status"] for k, v in steps.items()}
    assert status["selftest"] == "pass"
    assert status["nccl-aggregate"] == "pass"
    assert status["nccl-per-iter"] == "fail" and "planted failure" in steps["nccl-per-iter"]["note"]
    assert status["nccl-graph"] == "pass"  # the step after the failure still ran
    # the direct NCCL backend runs because `run --help` lists it (the planted failure is nccl's only)
    assert status["nccl-direct-aggregate"] == status["nccl-direct-per-iter"] == "pass"
    assert "--backend nccl-direct" in (tmp_path / "calls.log").read_text()
    assert status["nccl-all-gpus"] == "skip" and status["mpi-cupy"] == "pass"
    assert status["nvlink"] == "pass" and "needs 2 or more GPUs" in steps["nvlink"]["note"]  # refused, one GPU
    assert status["ib-loopback"] == "skip" and status["tune"] == "skip" and status["tuner-plugin"] == "skip"
    assert status["nvcc"] == "pass" and status["pytest-gpu"] == "skip"
    # sizes capped to the reported 64 MiB free: selftest buffers 16 MiB, run messages 8 MiB
    calls = (tmp_path / "calls.log").read_text()
    assert "selftest --gpu --size 16M" in calls and "-e 8M" in calls
    # everything under $OUT
    refs = list((out / "results" / "reference").glob("*.json"))
    assert len(refs) == 1 and json.loads(refs[0].read_text())["fake"] is True
    assert (out / "runs" / "nccl-aggregate" / "results.parquet").is_file()
    assert (out / "runs" / "nccl-aggregate" / "run.json").is_file()
    assert (out / "logs" / "nccl-per-iter.log").read_text().rstrip().endswith("# exit 1")
    assert "FAKE H100" in (out / "machine.txt").read_text()
    assert len(list((out / "build" / "cuda_kernels").glob("*.fatbin"))) == 4
    # the summary is the last thing printed, and fits on one screen
    tail = proc.stdout[proc.stdout.index("==== fabricbench GPU check"):]
    assert tail == (out / "summary.txt").read_text()
    assert len(tail.splitlines()) <= 40
    assert "pass, 1 fail," in tail and "versions" in (out / "machine.txt").read_text() and "nccl-aggregate all_reduce x1: 1048576 B busbw 1.0 GB/s" in tail
    assert "local_sm" in tail and "SM copy / cudaMemcpy" in tail and "(FAKE)" in tail


def test_a_step_that_overruns_is_cut_and_the_spent_budget_skips_the_rest(tmp_path):
    proc, out, steps = _run(tmp_path, GPU_CHECK_BUDGET_S="20", FAKE_SLEEP_ON="selftest",
                            GPU_CHECK_SKIP="pytest-gpu,versions")
    assert "nccl-direct" in steps and steps["nccl-direct"]["status"] == "skip"  # not listed by `run --help`
    assert steps["selftest"]["status"] == "fail"
    assert re.match(r"timed out after \d+ s", steps["selftest"]["note"]), steps["selftest"]
    assert int(steps["selftest"]["seconds"]) < 20
    assert steps["nccl-aggregate"]["status"] == "skip" and "budget" in steps["nccl-aggregate"]["note"]
    assert "==== fabricbench GPU check" in proc.stdout and proc.returncode == 1
