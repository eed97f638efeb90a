"""Bad input: one line on stderr that says what is wrong and how to fix it, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


def _assert_usage_error(res, *fragments):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fabricbench: error:")
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("args,fragments", [
    (["run", "allreduce_v", "--nprocs", "2"], ["unknown operation 'allreduce_v'", "all_reduce"]),
    (["run", "--backend", "ucc", "--nprocs", "2"], ["unknown backend 'ucc'", "gloo"]),
    (["run", "-b", "12Q"], ["-b/--minbytes", "'12Q' is not a size"]),
    (["run", "-b", "1.5M"], ["is not a size"]),
    (["run", "-b", "1M", "-e", "1K"], ["larger than --maxbytes"]),
    (["run", "pingpong", "--nprocs", "1", "--backend", "gloo"], ["pingpong needs exactly 2 ranks", "--nprocs 2"]),
    (["run", "pingpong", "--nprocs", "3", "--backend", "gloo"], ["needs exactly 2 ranks"]),
    (["run", "--dtype", "complex64"], ["unknown dtype"]),
    (["run", "--redop", "xor"], ["unknown reduction op"]),
    (["run", "all_reduce", "--dtype", "uint32", "--backend", "gloo", "--nprocs", "2"], ["no uint32"]),
    (["run", "all_reduce", "--dtype", "int32", "--redop", "avg", "--backend", "gloo", "--nprocs", "2"],
     ["cannot average int32"]),
    (["run", "--backend", "nccl", "--nprocs", "2"], ["needs a CUDA GPU", "--backend gloo"]),
    (["run", "-n", "0"], ["-n/--iters must be positive"]),
    (["run", "-w", "-1"], ["-w/--warmup must be 0 or more"]),
    (["run", "--timing", "sometimes"], ["--timing 'sometimes'"]),
    (["run", "--time-reduce", "median"], ["--time-reduce 'median'"]),
    (["run", "broadcast", "--root", "5", "--nprocs", "2", "--backend", "gloo"], ["--root 5 is not a rank"]),
    (["run", "--nprocs", "0", "--backend", "gloo"], ["--nprocs must be at least 1"]),
    (["run", "--iters", "many"], ["Invalid value for '-n' / '--iters'"]),
    (["run", "--no-such-option"], ["No such option"]),
])
def test_bad_options(args, fragments):
    _assert_usage_error(run_cli(*args), *fragments)


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    err = _assert_usage_error(run_cli("run", "all_reduce", "--nprocs", "2", "--backend", "gloo", "--out",
                                      str(blocker / "sub")), "--out")
    assert "cannot write there" in err


def test_unwritable_json_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    _assert_usage_error(run_cli("run", "all_reduce", "--nprocs", "2", "--backend", "gloo", "--json",
                                str(blocker / "out.json")), "--json")


def test_batch_shell_outside_a_step_is_refused():
    err = _assert_usage_error(run_cli("run", "all_reduce", env={"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4"}))
    assert "srun" in err and "--nprocs" in err


def test_nprocs_under_an_external_launcher_is_refused():
    _assert_usage_error(run_cli("run", "--nprocs", "2", "--backend", "gloo",
                                env={"RANK": "0", "WORLD_SIZE": "2"}), "drop --nprocs")


def test_bad_fault_injection_spec():
    _assert_usage_error(run_cli("run", "all_reduce", "--nprocs", "2", "--backend", "gloo", "-b", "1K", "-e", "1K",
                                env={"FABRICBENCH_INJECT": "explode@1"}), "FABRICBENCH_INJECT")


def test_worker_started_by_hand():
    _assert_usage_error(run_cli("worker"), "fabricbench run")


@pytest.mark.parametrize("args,fragment", [
    (["run", "all_reduce", "--nprocs", "2", "--backend", "gloo", "--cuda-graph"], "--cuda-graph needs the nccl backend"),
    (["run", "all_reduce", "--cuda-graph", "--timing", "per-iter"], "needs --timing aggregate"),
    (["run", "all_reduce", "--cpu-bind", "socket"], "--cpu-bind 'socket'"),
])
def test_gpu_only_options_on_cpu(args, fragment):
    _assert_usage_error(run_cli(*args), fragment)
