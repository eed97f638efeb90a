"""`--backend nccl-direct`: NCCL called as nccl-tests calls it, with separate send and receive buffers on one
CUDA stream of our own, through CuPy's `cupy.cuda.nccl` bindings.

Why this backend: torch.distributed's all_reduce, broadcast and reduce have no separate output buffer, so the
torch `nccl` backend can only measure them in place; nccl-tests measures every collective out of place and in
place. Here every collective takes a distinct (or, in place, the same) device pointer for input and output,
exactly ncclAllReduce(sendbuff, recvbuff, count, ...) as nccl-tests' src/*.cu issue them.

Why CuPy rather than NVIDIA's nccl4py: (1) CuPy is already fabricbench's GPU array library (the MPI backend's
device buffers and the GPU kernel tests use it), so one install serves both; (2) `cupy.cuda.nccl` has had the
same pointer-level API (NcclCommunicator(ndev, id, rank), allReduce/reduce/broadcast/reduceScatter/allGather/
send/recv(ptr, ..., stream), groupStart/groupEnd, get_version) for years, while nccl4py 0.6.0 (2026-09) is
pre-1.0, its communicator API still changing, and it pulls cuda-core, cuda-bindings and nvidia-cutlass-dsl.
The NCCL calls go through one small adapter (`CupyNccl`), so an nccl4py adapter can be added without touching
the rest.

Element types and reductions use NCCL's own enum values (nccl.h: ncclInt8 0 ... ncclBfloat16 9; ncclSum 0,
ncclProd 1, ncclMax 2, ncclMin 3, ncclAvg 4). The control plane (barriers, result gathering, the NCCL unique id)
is a torch.distributed gloo group on the same rendezvous as the other torch backends.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any

import numpy as np

from fabricbench.backends.base import Backend, Timer
from fabricbench.engine.dtypes import DType
from fabricbench.errors import UsageError

# nccl.h: ncclDataType_t / ncclRedOp_t
NCCL_TYPES = {"int8": 0, "uint8": 1, "int32": 2, "uint32": 3, "int64": 4, "uint64": 5, "half": 6, "float": 7,
              "double": 8, "bfloat16": 9}
NCCL_OPS = {"sum": 0, "prod": 1, "max": 2, "min": 3, "avg": 4}
# The host layout of each type (bfloat16 travels as its raw uint16 bits) -> NCCL's type.
_BY_HOST = {"int8": 0, "uint8": 1, "int32": 2, "uint32": 3, "int64": 4, "uint64": 5, "float16": 6, "float32": 7,
            "float64": 8, "uint16": 9}

INSTALL_HINT = ("--backend nccl-direct needs CuPy with NCCL on a CUDA machine: pip install cupy-cuda12x "
                "nvidia-nccl-cu12 (fabricbench's 'gpu' extra), or use --backend nccl (through torch)")


def available() -> str | None:
    """Why this backend cannot run here (None: it can)."""
    if importlib.util.find_spec("cupy") is None:
        return INSTALL_HINT
    try:
        from cupy.cuda import nccl  # noqa: F401
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "--backend nccl-direct needs a CUDA GPU and none is visible here; use --backend gloo on CPU"
        if not getattr(nccl, "available", True):
            return INSTALL_HINT
    except Exception as err:  # noqa: BLE001 - any import or driver failure means: not usable here
        return f"{INSTALL_HINT} ({type(err).__name__}: {err})"
    return None


def unsupported(dtype: DType, redop: str | None, nccl_version: int | None = None) -> str | None:
    if dtype.name not in NCCL_TYPES:
        return f"NCCL has no {dtype.name}"
    if redop is not None and redop not in NCCL_OPS:
        return f"NCCL has no {redop} reduction"
    if nccl_version is not None and nccl_version < 21000 and (dtype.name == "bfloat16" or redop == "avg"):
        return "bfloat16 and avg need NCCL 2.10 or newer"
    return None


def nccl_type(buf) -> int:
    return _BY_HOST[np.dtype(buf.dtype).name]


class CupyNccl:
    """The NCCL calls, on CuPy arrays: pointers, counts and our stream filled in here."""

    def __init__(self, cupy, nccl, comm, stream):
        self.cp, self.nccl, self.comm, self.stream = cupy, nccl, comm, stream

    @staticmethod
    def _ptr(buf) -> int:
        return buf.data.ptr

    def all_reduce(self, send, recv, op):
        self.comm.allReduce(self._ptr(send), self._ptr(recv), recv.size, nccl_type(recv), op, self.stream.ptr)

    def all_gather(self, send, recv):
        self.comm.allGather(self._ptr(send), self._ptr(recv), send.size, nccl_type(recv), self.stream.ptr)

    def reduce_scatter(self, send, recv, op):
        self.comm.reduceScatter(self._ptr(send), self._ptr(recv), recv.size, nccl_type(recv), op, self.stream.ptr)

    def broadcast(self, send, recv, root):
        self.comm.broadcast(self._ptr(send), self._ptr(recv), recv.size, nccl_type(recv), root, self.stream.ptr)

    def reduce(self, send, recv, op, root):
        self.comm.reduce(self._ptr(send), self._ptr(recv), send.size, nccl_type(send), op, root, self.stream.ptr)

    def send(self, buf, peer):
        self.comm.send(self._ptr(buf), buf.size, nccl_type(buf), peer, self.stream.ptr)

    def recv(self, buf, peer):
        self.comm.recv(self._ptr(buf), buf.size, nccl_type(buf), peer, self.stream.ptr)

    def group_start(self):
        self.nccl.groupStart()

    def group_end(self):
        self.nccl.groupEnd()


class StreamEventTimer(Timer):
    """CUDA events on the backend's stream (what the GPU spent on the timed calls)."""

    def __init__(self, cupy, stream):
        super().__init__()
        self.cp, self.stream = cupy, stream
        self._begin, self._end = cupy.cuda.Event(), cupy.cuda.Event()

    def start(self) -> None:
        self._begin.record(self.stream)

    def stop(self) -> None:
        self._end.record(self.stream)

    def elapsed_ns(self) -> int:
        self._end.synchronize()
        return int(self.cp.cuda.get_elapsed_time(self._begin, self._end) * 1e6)


class NcclDirectBackend(Backend):
    name, device = "nccl-direct", "cuda"
    primitives = frozenset({"all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all",
                            "sendrecv", "send"})
    out_of_place = primitives  # NCCL takes a separate output pointer for every call
    nonblocking_window = True

    def __init__(self, ranks, timeout_s: float, control=None, lib=None, cupy=None):
        """`control`: the control plane (barrier, objects; default a gloo group); `lib`/`cupy`: injected by
        tests (a fake NCCL adapter and array module)."""
        if lib is None:
            why = available()
            if why:
                raise UsageError(why)
        if cupy is None:
            import cupy
        self.cp = cupy
        self.rank, self.world_size = ranks.rank, ranks.world_size
        self.gpu = ranks.local_rank % max(1, cupy.cuda.runtime.getDeviceCount())
        cupy.cuda.Device(self.gpu).use()
        if control is None:
            from fabricbench.backends.torch_dist import TorchBackend

            control = TorchBackend("gloo", ranks, timeout_s)
        self._ctrl = control
        self.stream = cupy.cuda.Stream(non_blocking=True)
        if lib is None:
            from cupy.cuda import nccl

            uid = control.broadcast_object(nccl.get_unique_id() if self.rank == 0 else None)
            lib = CupyNccl(cupy, nccl, nccl.NcclCommunicator(self.world_size, uid, self.rank), self.stream)
            self._nccl_version = int(nccl.get_version())
        else:
            self._nccl_version = getattr(lib, "version", 22700)
        self._lib = lib

    # -- capabilities -------------------------------------------------------------------------------------
    def unsupported(self, dtype: DType, redop: str | None) -> str | None:
        return unsupported(dtype, redop, self._nccl_version)

    # -- buffers (device arrays in the host layout of their type; work ordered on our stream) ----------------
    def alloc(self, count: int, dtype: DType) -> Any:
        with self.stream:
            return self.cp.zeros(count, dtype.host_dtype)

    def view(self, buf: Any, offset: int, count: int) -> Any:
        return buf[offset:offset + count]

    def write(self, buf: Any, host: np.ndarray) -> None:
        buf.set(np.ascontiguousarray(host, dtype=buf.dtype), stream=self.stream)

    def read(self, buf: Any) -> np.ndarray:
        self.stream.synchronize()
        return buf.get(stream=self.stream)

    def poison(self, buf: Any) -> None:
        with self.stream:
            buf.view(np.uint8).fill(0xA5)

    # -- communication ------------------------------------------------------------------------------------
    def all_reduce(self, send, recv, redop):
        self._lib.all_reduce(send, recv, NCCL_OPS[redop])

    def all_gather(self, send, recv):
        self._lib.all_gather(send, recv)

    def reduce_scatter(self, send, recv, redop):
        self._lib.reduce_scatter(send, recv, NCCL_OPS[redop])

    def broadcast(self, send, recv, root):
        self._lib.broadcast(send, recv, root)

    def reduce(self, send, recv, redop, root):
        self._lib.reduce(send, recv, NCCL_OPS[redop], root)

    def all_to_all(self, send, recv):
        """nccl-tests' alltoall: a group of one send and one receive of count/n elements per peer."""
        n = self.world_size
        block = recv.size // n
        self._lib.group_start()
        for peer in range(n):
            self._lib.send(send[peer * block:(peer + 1) * block], peer)
            self._lib.recv(recv[peer * block:(peer + 1) * block], peer)
        self._lib.group_end()

    def sendrecv(self, send, recv, dst, src):
        self._lib.group_start()
        self._lib.send(send, dst)
        self._lib.recv(recv, src)
        self._lib.group_end()

    def send(self, buf, dst):
        self._lib.send(buf, dst)

    def recv(self, buf, src):
        self._lib.recv(buf, src)

    @contextlib.contextmanager
    def group(self):
        self._lib.group_start()
        try:
            yield
        finally:
            self._lib.group_end()

    def send_window(self, buf, dst, n):
        self._lib.group_start()  # NCCL's non-blocking form: the window's sends in one group
        for _ in range(n):
            self._lib.send(buf, dst)
        self._lib.group_end()

    def recv_window(self, buf, src, n):
        self._lib.group_start()
        for _ in range(n):
            self._lib.recv(buf, src)
        self._lib.group_end()

    def exchange_window(self, send, recv, peer, n):
        self._lib.group_start()
        for _ in range(n):
            self._lib.recv(recv, peer)
        for _ in range(n):
            self._lib.send(send, peer)
        self._lib.group_end()

    # -- control plane and timing -------------------------------------------------------------------------
    def barrier(self) -> None:
        self._ctrl.barrier()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def gather_object(self, obj: Any) -> list[Any] | None:
        return self._ctrl.gather_object(obj)

    def broadcast_object(self, obj: Any) -> Any:
        return self._ctrl.broadcast_object(obj)

    def timer(self) -> Timer:
        return StreamEventTimer(self.cp, self.stream)

    def gpu_bus_id(self) -> str | None:
        try:
            return str(self.cp.cuda.Device(self.gpu).pci_bus_id)
        except Exception:  # noqa: BLE001 - binding is optional
            return None

    def capture(self, fn):
        """nccl-tests -G: the timed loop captured once on our stream (thread-local mode, as nccl-tests uses)."""
        mode = self.cp.cuda.runtime.streamCaptureModeThreadLocal
        self.stream.begin_capture(mode)
        try:
            fn()
        finally:
            graph = self.stream.end_capture()
        return lambda: graph.launch(self.stream)

    def versions(self) -> dict[str, Any]:
        v = self._nccl_version
        info: dict[str, Any] = {"nccl": f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 20900 else str(v),
                                "nccl_bindings": "cupy.cuda.nccl", "cupy": getattr(self.cp, "__version__", None)}
        try:
            info["gpu_model"] = self.cp.cuda.runtime.getDeviceProperties(self.gpu)["name"].decode()
        except Exception:  # noqa: BLE001
            pass
        return info

    def close(self) -> None:
        comm = getattr(self._lib, "comm", None)
        if comm is not None:
            try:
                comm.destroy()
            except Exception:  # noqa: BLE001 - teardown after a failure must not mask it
                pass
        self._ctrl.close()
