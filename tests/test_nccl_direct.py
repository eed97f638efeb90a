"""The direct NCCL backend's host logic, with a numpy stand-in for CuPy and a recording stand-in for NCCL (no GPU
here); on a machine without CuPy it must refuse in one line. The real run is benchmarks/gpu_nccl_direct.sh."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from fabricbench.backends import nccl_direct as nd
from fabricbench.engine.config import RunConfig
from fabricbench.engine.driver import Driver
from fabricbench.engine.dtypes import DTYPES
from fabricbench.results import read_results
from tests.conftest import run_cli
from tests.fake_backend import ranks


class FakeDeviceArray(np.ndarray):
    def set(self, host, stream=None):
        self[...] = host

    def get(self, stream=None):
        return np.asarray(self).copy()


class FakeStream:
    ptr = 1234

    def __init__(self, non_blocking=False):
        self.syncs = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        self.syncs += 1


def fake_cupy():
    cuda = SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=lambda: 1, streamCaptureModeThreadLocal=1),
                           Device=lambda i: SimpleNamespace(use=lambda: None, pci_bus_id="0000:1b:00.0"),
                           Stream=FakeStream)
    return SimpleNamespace(cuda=cuda, zeros=lambda n, dt: np.zeros(n, dt).view(FakeDeviceArray))


class RecordingNccl:
    """One rank: every collective's result is its input; records (call, nccl type, count, same buffer?)."""

    version = 22703

    def __init__(self):
        self.calls = []

    def _rec(self, name, send, recv, count):
        self.calls.append((name, nd.nccl_type(recv), count, np.shares_memory(send, recv)))

    def all_reduce(self, send, recv, op):
        self._rec("allReduce", send, recv, recv.size)
        recv[...] = send

    def all_gather(self, send, recv):
        self._rec("allGather", send, recv, send.size)
        recv[...] = send

    def reduce_scatter(self, send, recv, op):
        self._rec("reduceScatter", send, recv, recv.size)
        recv[...] = send

    def broadcast(self, send, recv, root):
        self._rec("broadcast", send, recv, recv.size)
        recv[...] = send

    def reduce(self, send, recv, op, root):
        self._rec("reduce", send, recv, send.size)
        recv[...] = send

    def send(self, buf, peer):
        self.calls.append(("send", peer, buf.size))
        self._pending = buf.copy()

    def recv(self, buf, peer):
        self.calls.append(("recv", peer, buf.size))
        buf[...] = self._pending

    def group_start(self):
        self.calls.append(("groupStart",))

    def group_end(self):
        self.calls.append(("groupEnd",))


class Control:
    def barrier(self):
        pass

    def gather_object(self, obj):
        return [obj]

    def broadcast_object(self, obj):
        return obj

    def close(self):
        pass


def _backend():
    lib = RecordingNccl()
    return nd.NcclDirectBackend(ranks(), 60, control=Control(), lib=lib, cupy=fake_cupy()), lib


def test_every_collective_out_of_place_and_in_place_every_dtype(tmp_path):
    b, lib = _backend()
    cfg = RunConfig(ops=["all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all"],
                    backend="nccl-direct", min_bytes=1024, max_bytes=1024, iters=2, warmup=0, check_iters=1,
                    all_dtypes=True, out_dir=str(tmp_path), run_id="t")
    Driver(cfg, b, ranks()).run()
    ops = read_results(tmp_path)
    ops = ops[ops.row_kind == "op"]
    assert (ops.nwrong == 0).all() and set(ops.dtype) == set(DTYPES)
    for op in ("all_reduce", "broadcast", "reduce", "all_gather", "reduce_scatter"):
        assert set(ops[ops.op == op].placement) == {"out-of-place", "in-place"}, op  # unlike torch's nccl
    # NCCL got distinct buffers out of place and the same one in place, with NCCL's type codes
    ar = [c for c in lib.calls if c[0] == "allReduce"]
    assert {c[3] for c in ar} == {False, True}
    assert {c[1] for c in ar} == set(range(10))


def test_all_to_all_and_windows_are_nccl_groups():
    b, lib = _backend()
    send = np.arange(8, dtype=np.float32).view(FakeDeviceArray)
    recv = np.zeros(8, dtype=np.float32).view(FakeDeviceArray)
    b.all_to_all(send, recv)
    assert lib.calls == [("groupStart",), ("send", 0, 8), ("recv", 0, 8), ("groupEnd",)]
    assert (recv == send).all()
    lib.calls.clear()
    b.send_window(send, 1, 3)
    assert lib.calls == [("groupStart",), *[("send", 1, 8)] * 3, ("groupEnd",)]


def test_type_and_op_codes_are_ncclh():
    assert nd.nccl_type(np.zeros(1, np.uint16)) == 9  # bfloat16's raw bits
    assert nd.nccl_type(np.zeros(1, np.float16)) == 6 and nd.NCCL_OPS["avg"] == 4
    assert nd.unsupported(DTYPES["bfloat16"], "avg", 20804) is not None
    assert nd.unsupported(DTYPES["bfloat16"], "avg", 22703) is None


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_refused_in_one_line_without_cupy(tmp_path):
    assert "pip install cupy-cuda12x" in nd.available()
    res = run_cli("run", "all_reduce", "--backend", "nccl-direct", "-P", "1", "--out", str(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "cupy" in res.stderr.lower()


def test_aggregated_iterations_are_one_nccl_group_as_in_nccl_tests(tmp_path):
    """nccl-tests' common.cu: with -m > 1 each outer iteration's calls sit between ncclGroupStart and
    ncclGroupEnd; -m 1 makes no group."""
    b, lib = _backend()
    cfg = RunConfig(ops=["all_reduce"], backend="nccl-direct", min_bytes=1024, max_bytes=1024, iters=3, warmup=0,
                    check_iters=0, agg_iters=4, in_place=False, out_dir=str(tmp_path), run_id="t")
    Driver(cfg, b, ranks()).run()
    seq = [c[0] for c in lib.calls]
    groups = [seq[i:i + 6] for i, c in enumerate(seq) if c == "groupStart"]
    assert len(groups) >= 3 and all(g == ["groupStart"] + ["allReduce"] * 4 + ["groupEnd"] for g in groups[-3:])
    lib.calls.clear()
    cfg.agg_iters = 1
    Driver(cfg, b, ranks()).run()
    assert "groupStart" not in [c[0] for c in lib.calls]
