"""End to end: `fabricbench run` as a user runs it, on real gloo ranks on this machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabricbench.results import COLUMNS, read_results
from tests.conftest import REPO, run_cli

SMALL = ["-b", "1K", "-e", "16K", "-f", "4", "-n", "3", "-w", "1"]
REQUIRED = ["op", "backend", "nranks", "nnodes", "size_bytes", "count", "dtype", "time_us", "algbw_gbps",
            "busbw_gbps", "nwrong", "p50_us", "p99_us", "host", "rank"]


def _ops(frame):
    return frame[frame.row_kind == "op"]


def test_two_ranks_every_op(tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "all", "--nprocs", "2", "--backend", "gloo", *SMALL, "--out", str(out))
    assert res.returncode == 0, res.stderr
    frame = read_results(out)
    assert set(REQUIRED) <= set(frame.columns)
    ops = _ops(frame)
    assert sorted(ops.op.unique()) == sorted(["all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce",
                                             "all_to_all", "sendrecv", "pingpong", "p2p_uni", "p2p_bi"])
    assert (ops.nwrong == 0).all() and (ops.busbw_gbps > 0).all() and (ops.time_us > 0).all()
    assert set(ops.size_bytes) == {1024, 4096, 16384}
    assert (ops.nranks == 2).all() and (ops.nnodes == 1).all() and (ops.backend == "gloo").all()
    # busbw is algbw times the op's factor: all_reduce on 2 ranks: 2(n-1)/n = 1
    ar = ops[ops.op == "all_reduce"]
    assert ar.busbw_gbps.tolist() == pytest.approx(ar.algbw_gbps.tolist())
    # algbw = bytes / time, decimal GB/s
    row = ar.iloc[-1]
    assert row.algbw_gbps == pytest.approx(row.size_bytes / (row.time_us * 1e3))
    # ping-pong time is one way, and recorded as latency
    pp = ops[ops.op == "pingpong"]
    assert (pp.latency_us == pp.time_us).all()
    # one row per rank as well, with each rank's own timestamps
    ranks = frame[frame.row_kind == "rank"]
    assert len(ranks) == 2 * len(ops) and set(ranks["rank"]) == {0, 1}
    assert (ranks.t_end_ns > ranks.t_start_ns).all()
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["nranks"] == 2 and run["backend"] == "gloo"
    for key in ("command_line", "hosts", "ranks", "versions", "start_time", "end_time", "env", "config"):
        assert key in run
    assert run["versions"]["torch"].startswith("2.") and run["versions"]["python"]
    # the table: nccl-tests columns, units, one footer per op
    assert "#wrong" in res.stdout and "(GB/s)" in res.stdout and "(us)" in res.stdout
    # nccl-tests' footer: the number last on the line (awk '{print $NF}'), GB/s stated in the run header
    assert res.stdout.count("# Avg bus bandwidth    : ") == 10 and "decimal GB/s" in res.stdout
    for line in res.stdout.splitlines():
        if line.startswith("# Avg bus bandwidth"):
            float(line.split()[-1])


def test_four_ranks_per_iter_timing_and_nccl_tests_json(tmp_path):
    out, js = tmp_path / "run", tmp_path / "nccl.json"
    res = run_cli("run", "all_reduce", "all_gather", "--nprocs", "4", "--backend", "gloo", *SMALL,
                  "--timing", "per-iter", "--time-reduce", "max", "--out", str(out), "--json", str(js))
    assert res.returncode == 0, res.stderr
    ops = _ops(read_results(out))
    assert (ops.timing == "per-iter").all() and (ops.time_reduce == "max").all()
    assert (ops.p50_us > 0).all() and (ops.p99_us >= ops.p50_us).all() and (ops.cv_pct >= 0).all()
    assert ops.straggler_rank.between(0, 3).all() and ops.straggler_host.notna().all()
    # time reduced with max is the completion time
    assert (ops.time_us == ops.time_max_us).all()
    for op in ("all_reduce", "all_gather"):
        doc = json.loads((tmp_path / f"nccl-{op}.json").read_text())
        assert {"version", "start_time", "args", "env", "config", "results", "out_of_bounds",
                "average_bus_bandwidth", "errors", "end_time"} <= set(doc)
        first = doc["results"][0]
        place = "in_place" if op == "all_reduce" else "out_of_place"
        assert first["size"] == 1024 and first[place]["nwrong"] == 0 and first[place]["bus_bw"] > 0
        assert f"{place}_per_iter" in first and len(doc["config"]["devices"]) == 4


def test_in_place_and_other_dtypes(tmp_path):
    for args in (["--dtype", "half", "--redop", "max"], ["--dtype", "bfloat16", "--redop", "prod"],
                 ["--dtype", "int8", "--redop", "min", "--in-place"], ["--dtype", "double", "--redop", "avg"]):
        out = tmp_path / args[1]
        res = run_cli("run", "all_reduce", "reduce_scatter", "all_gather", "--nprocs", "3", "--backend", "gloo",
                      "-b", "4K", "-e", "4K", "-n", "2", "-w", "0", "-c", "2", *args, "--out", str(out))
        assert res.returncode == 0, (args, res.stderr)
        ops = _ops(read_results(out))
        assert (ops.nwrong == 0).all() and (ops.check_iters == 2).all()
        assert (ops.dtype == args[1]).all()
        if "--in-place" in args:
            assert (ops.placement == "in-place").all()


def test_corrupted_data_is_caught_and_fails_the_run(tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "all_reduce", "all_gather", "--nprocs", "2", "--backend", "gloo", "-b", "4K", "-e", "4K",
                  "-n", "2", "-w", "1", "--out", str(out), env={"FABRICBENCH_INJECT": "corrupt@1"})
    assert res.returncode == 1
    assert "wrong values" in res.stderr and "Traceback" not in res.stderr
    assert "FAILED" in res.stdout
    ops = _ops(read_results(out))
    assert (ops.nwrong > 0).all() and (ops.status == "wrong-data").all()
    assert json.loads((out / "run.json").read_text())["status"] == "wrong-data"


def test_without_check_the_same_corruption_goes_unseen(tmp_path):
    """-c 0 disables checking: the result says so (check_iters 0) rather than claiming the data was right."""
    out = tmp_path / "run"
    res = run_cli("run", "all_reduce", "--nprocs", "2", "--backend", "gloo", "-b", "4K", "-e", "4K", "-n", "2",
                  "-c", "0", "--out", str(out), env={"FABRICBENCH_INJECT": "corrupt@1"})
    assert res.returncode == 0
    assert (_ops(read_results(out)).check_iters == 0).all()


def _alive_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_killed_rank_stops_the_run_names_it_and_keeps_results(tmp_path):
    out = tmp_path / "killed-run"
    start = time.monotonic()
    res = run_cli("run", "all_reduce", "--nprocs", "4", "--backend", "gloo", "-b", "1K", "-e", "64K", "-f", "4",
                  "-n", "2", "-w", "1", "-c", "0", "--timeout", "60", "--out", str(out),
                  env={"FABRICBENCH_INJECT": "die@2:after=13"})  # 4 calls per size (warm-up, the untimed
    # sync call, 2 timed): dies in the 4th size
    assert res.returncode == 1
    assert time.monotonic() - start < 60
    err = res.stderr.strip()
    assert "rank 2" in err and "SIGKILL" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert _alive_with(str(out)) == []  # no orphans
    ops = _ops(read_results(out))
    assert list(ops.size_bytes) == [1024, 4096, 16384]  # measured before the failure, kept
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and "rank 2" in run["error"]


def test_hung_rank_is_named_at_the_timeout(tmp_path):
    out = tmp_path / "hung-run"
    start = time.monotonic()
    res = run_cli("run", "all_reduce", "--nprocs", "3", "--backend", "gloo", "-b", "1K", "-e", "1K", "-n", "50",
                  "-w", "1", "--timeout", "15", "--out", str(out), env={"FABRICBENCH_INJECT": "hang@1:after=10"})
    elapsed = time.monotonic() - start
    assert res.returncode == 1
    # --timeout counts from the last completed call, so: start-up (slow on a loaded machine), the calls before
    # the hang, 15 s, the stop grace
    assert 15 <= elapsed < 15 + 60
    assert "no rank returned from an operation call for 15 s" in res.stderr
    assert f"rank 1 on {socket.gethostname()} stopped after call 10, before call 11 (all_reduce 1 KiB" in res.stderr
    assert _alive_with(str(out)) == []
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(envs: list[dict], args: list[str]) -> list[subprocess.CompletedProcess]:
    procs = []
    for env in envs:
        full = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE"))}
        full.update(env)
        procs.append(subprocess.Popen([sys.executable, "-m", "fabricbench", "run", *args], env=full, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return results


def test_slurm_step_environment_resolves_ranks(tmp_path):
    """Two processes started the way srun starts them: ranks from SLURM_PROCID, world from the step."""
    out, port = tmp_path / "slurm", _free_port()
    host = socket.gethostname()
    base = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "3", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "2",
            "SLURM_JOB_NODELIST": f"{host},other", "SLURM_STEP_NODELIST": host, "SLURM_NODEID": "0",
            "SLURM_STEP_TASKS_PER_NODE": "2", "MASTER_PORT": str(port)}
    envs = [dict(base, SLURM_PROCID=str(r), SLURM_LOCALID=str(r)) for r in range(2)]
    results = _run_ranks(envs, ["all_reduce", "--backend", "gloo", "-b", "4K", "-e", "4K", "-n", "2",
                                "--out", str(out)])
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    ops = _ops(read_results(out))
    assert (ops.nranks == 2).all() and (ops.nwrong == 0).all()
    run = json.loads((out / "run.json").read_text())
    assert {r["rank"] for r in run["ranks"]} == {0, 1}
    assert "launcher slurm" in results[0].stdout


def test_torchrun_runs_the_same_command(tmp_path):
    out = tmp_path / "torchrun"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", str(_free_port()), "-m", "fabricbench", "run", "all_reduce", "sendrecv",
                "--backend", "gloo", "-b", "4K", "-e", "8K", "-f", "2", "-n", "2", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "FABRICBENCH_INJECT"))}
    res = subprocess.run(torchrun, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ops = _ops(read_results(out))
    # 2 sizes; gloo's all_reduce in place only, sendrecv out of place only
    assert len(ops) == 4 and (ops.nwrong == 0).all() and (ops.nranks == 2).all()
    assert "launcher torchrun" in res.stdout


def test_schema_columns_are_documented():
    doc = (REPO / "docs" / "results-schema.md").read_text()
    for name in COLUMNS:
        assert f"`{name}`" in doc, f"column {name} is not documented in docs/results-schema.md"


@pytest.mark.parametrize("signame,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_and_sigterm_stop_every_rank_and_keep_results(tmp_path, signame, code):
    import signal

    out = tmp_path / "interrupted"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE"))}
    proc = subprocess.Popen([sys.executable, "-m", "fabricbench", "run", "all_reduce", "--nprocs", "3", "--backend",
                             "gloo", "-b", "1K", "-e", "256M", "-n", "20", "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "results.parquet").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(getattr(signal, signame))
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert _alive_with(str(out)) == []
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and signame.replace("SIGINT", "Ctrl-C") in run["error"]
    assert len(_ops(read_results(out))) >= 1  # sizes completed before the signal are kept
