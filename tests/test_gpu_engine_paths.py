"""The engine's GPU paths, tested on the CPU (issue 14): per-iteration CUDA-event timing behind a stream
hold, CUDA-graph capture mode, one GPU per local rank, CPU binding of every thread before the backend starts,
GPUDirect RDMA per rank only when every connection used it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

from conftest import REPO  # noqa: E402
from fabricbench.backends import torch_dist  # noqa: E402
from fabricbench.engine import gpu_inventory, nccl_log  # noqa: E402
from fabricbench.errors import UsageError  # noqa: E402


# -- per-iteration timing: the stream is held before the start event ------------------------------------------
class _Events:
    """torch.cuda.Event and torch.cuda._sleep, recording the order in which work is queued."""

    def __init__(self, fired_early: bool):
        self.log: list[str] = []
        self.fired_early = fired_early
        outer = self

        class Event:
            count = 0

            def __init__(self, enable_timing=False):
                self.name = "begin" if Event.count % 2 == 0 else "end"
                Event.count += 1

            def record(self):
                outer.log.append(f"record {self.name}")

            def query(self):
                outer.log.append(f"query {self.name}")
                return outer.fired_early

            def synchronize(self):
                pass

            def elapsed_time(self, other):
                return 0.01  # ms

        self.Event = Event

    def sleep(self, cycles):
        self.log.append(f"sleep {cycles}")


@pytest.mark.parametrize("fired_early", [False, True])
def test_per_iter_timer_holds_the_stream_before_the_start_event_and_checks_it_held(monkeypatch, fired_early):
    ev = _Events(fired_early)
    monkeypatch.setattr(torch.cuda, "Event", ev.Event)
    monkeypatch.setattr(torch.cuda, "_sleep", ev.sleep)
    hold = torch_dist.StreamHold(clock_khz=1_500_000)  # 1.5 GHz
    timer = torch_dist.CudaEventTimer(hold)
    timer.start()
    ev.log.append("op enqueued")
    timer.stop()
    assert timer.elapsed_ns() == 10_000
    cycles = int(torch_dist.StreamHold.START_US * 1500)
    assert ev.log == [f"sleep {cycles}", "record begin", "op enqueued", "query begin", "record end"]
    assert timer.held is (not fired_early)
    assert hold.unheld == (1 if fired_early else 0)
    assert hold.us == torch_dist.StreamHold.START_US * (2 if fired_early else 1)  # longer hold next time
    assert "launch cost" in (torch_dist.CudaEventTimer.__doc__ or "")


# -- CUDA graphs: thread-local capture ---------------------------------------------------------------------------
def test_cuda_graph_capture_is_thread_local(monkeypatch):
    seen: dict = {}

    class Graph:
        def replay(self):
            pass

    class GraphCtx:  # torch.cuda.graph's signature (2.1+)
        def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode="global"):
            seen["capture_error_mode"] = capture_error_mode

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class Stream:
        def wait_stream(self, other):
            pass

    class StreamCtx:
        def __init__(self, s):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "Stream", lambda dev=None: Stream())
    monkeypatch.setattr(torch.cuda, "stream", StreamCtx)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda dev=None: Stream())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: None)
    monkeypatch.setattr(torch.cuda, "graph", GraphCtx)
    backend = object.__new__(torch_dist.TorchBackend)
    backend.device, backend._dev = "cuda", "cuda:0"
    calls = []
    replay = backend.capture(lambda: calls.append(1))
    assert seen == {"capture_error_mode": "thread_local"} and len(calls) == 2 and callable(replay)


def test_graph_capture_mode_needs_torch_2_1_or_refuses(monkeypatch):
    assert torch_dist.graph_capture_kwargs() == {"capture_error_mode": "thread_local"}  # this torch has it

    class OldGraph:  # torch 2.0's signature: no capture_error_mode
        def __init__(self, cuda_graph, pool=None, stream=None):
            pass

    monkeypatch.setattr(torch.cuda, "graph", OldGraph)
    with pytest.raises(UsageError, match="--cuda-graph needs torch 2.1"):
        torch_dist.graph_capture_kwargs()


# -- one GPU per local rank ---------------------------------------------------------------------------------------
def test_more_local_ranks_than_gpus_is_one_line():
    assert torch_dist.gpu_for_local_rank(1, 2) == 1
    with pytest.raises(UsageError, match="local rank 2 has no GPU of its own: this node shows 2 GPU"):
        torch_dist.gpu_for_local_rank(2, 2)
    with pytest.raises(UsageError, match="needs a GPU"):
        torch_dist.gpu_for_local_rank(0, 0)


def _proc(tmp_path, buses):
    root = tmp_path / "proc"
    for b in buses:
        (root / "driver" / "nvidia" / "gpus" / b).mkdir(parents=True)
    return root


def test_launcher_refuses_more_ranks_than_gpus_before_starting_any(tmp_path):
    from fabricbench.launch.local import check_gpus_for_ranks

    proc = _proc(tmp_path, ["0000:1b:00.0", "0000:43:00.0"])
    check_gpus_for_ranks(2, "nccl", {}, proc)
    with pytest.raises(UsageError) as err:
        check_gpus_for_ranks(3, "nccl", {}, proc)
    assert "--nprocs 3" in str(err.value) and "2 GPU(s)" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UsageError, match="1 GPU"):
        check_gpus_for_ranks(2, "nccl-direct", {"CUDA_VISIBLE_DEVICES": "1"}, proc)
    check_gpus_for_ranks(8, "gloo", {}, proc)  # CPU backends: no GPU needed
    check_gpus_for_ranks(8, "nccl", {}, tmp_path / "nowhere")  # unknown: the rank itself checks


def test_launch_refuses_before_any_rank_starts(tmp_path, monkeypatch):
    from fabricbench.engine.config import RunConfig
    from fabricbench.launch import local

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(local.subprocess, "Popen", lambda *a, **k: pytest.fail("a rank was started"))
    with pytest.raises(UsageError, match="--nprocs 4 with --backend nccl needs one GPU per rank"):
        local.launch(RunConfig(ops=["all_reduce"], out_dir=str(tmp_path)), 4, "nccl")


def test_gpu_inventory_maps_visible_devices_to_bus_ids(tmp_path):
    proc = _proc(tmp_path, ["0000:c1:00.0", "0000:1b:00.0", "0000:43:00.0"])
    assert gpu_inventory.physical_gpus(proc) == ["0000:1b:00.0", "0000:43:00.0", "0000:c1:00.0"]
    assert gpu_inventory.guess_bus_id(1, {}, proc) == "0000:43:00.0"
    assert gpu_inventory.guess_bus_id(0, {"CUDA_VISIBLE_DEVICES": "2,0"}, proc) == "0000:c1:00.0"
    assert gpu_inventory.guess_bus_id(0, {"CUDA_VISIBLE_DEVICES": "GPU-8f2a"}, proc) is None
    assert gpu_inventory.guess_bus_id(3, {}, proc) is None
    assert gpu_inventory.visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1,-1,2"}, proc) == 2
    assert gpu_inventory.visible_gpu_count({}, tmp_path / "none") is None


# -- CPU binding: every thread, before the backend starts -----------------------------------------------------------
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to see a binding")
def test_binding_reaches_threads_started_before_it_and_happens_before_torch(tmp_path):
    """In a child process: a thread started first (as NCCL's proxy or torch's watchdog would be) is bound
    too; and the worker binds before it imports torch."""
    one = min(os.sched_getaffinity(0))
    bus = "0000:1b:00.0"
    sysfs = tmp_path / "sys"
    (sysfs / "bus" / "pci" / "devices" / bus).mkdir(parents=True)
    (sysfs / "bus" / "pci" / "devices" / bus / "local_cpulist").write_text(f"{one}\n")
    proc = _proc(tmp_path, [bus])
    script = textwrap.dedent(f"""
        import json, os, sys, threading
        from fabricbench.engine import binding
        original = os.sched_getaffinity(0)
        stop = threading.Event()
        t = threading.Thread(target=stop.wait); t.start()
        why = binding.bind_to_gpu("{bus}", "{sysfs}")
        masks = {{tid: sorted(os.sched_getaffinity(tid)) for tid in binding.thread_ids()}}
        stop.set(); t.join()
        # the early binding, from the worker, before torch is imported
        binding._ORIGINAL_ALLOWED = None
        binding.bind_all_threads(original)
        from fabricbench.engine import worker
        from fabricbench.engine.config import RunConfig
        import fabricbench.engine.gpu_inventory as inv
        real = binding.bind_early
        binding.bind_early = lambda r: real(r, {{}}, "{sysfs}", "{proc}")
        inv.physical_gpus = lambda proc="{proc}": ["{bus}"]
        early = worker.bind_before_backend(RunConfig(ops=["all_reduce"], backend="nccl"),
                                           type("R", (), {{"local_rank": 0}})())
        print(json.dumps({{"why": why, "masks": masks, "early": early, "torch": "torch" in sys.modules,
                          "after": sorted(os.sched_getaffinity(0))}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(res["masks"]) >= 2 and all(m == [one] for m in res["masks"].values()), res
    assert "threads of the process" in res["why"]
    assert res["early"] and "local to GPU" in res["early"] and res["after"] == [one]
    assert res["torch"] is False  # bound before torch was imported


# -- GPUDirect RDMA per rank ----------------------------------------------------------------------------------------
def test_gdr_is_used_by_a_rank_only_when_every_connection_used_it():
    all_gdr = "\n".join([
        "n:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0/GDRDMA",
        "n:1:1 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/IB/0/GDRDMA",
    ])
    mixed = all_gdr + "\nn:1:1 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[0] [send] via NET/IB/1"
    assert nccl_log.summarize(all_gdr)["gdr"] is True
    assert nccl_log.summarize(mixed)["gdr"] is False
