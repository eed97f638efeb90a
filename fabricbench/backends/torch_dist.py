"""torch.distributed backend: NCCL on GPUs, gloo on CPUs (or gloo on GPUs' host memory when asked).

torch's all_reduce, broadcast and reduce work in place only; the driver then runs those in place and says so
in the results (`placement`). Objects and the per-iteration barrier go through a gloo group, so the barrier
is a host-side meeting point even when the data moves over NCCL.
"""

from __future__ import annotations

import datetime
import inspect
import platform
import sys
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fabricbench.backends.base import Backend, Timer
from fabricbench.engine.dtypes import DType
from fabricbench.errors import UsageError

_TORCH_DTYPES = {
    "int8": torch.int8, "uint8": torch.uint8, "int32": torch.int32, "int64": torch.int64,
    "half": torch.float16, "float": torch.float32, "double": torch.float64, "bfloat16": torch.bfloat16,
}
_REDOPS = {"sum": dist.ReduceOp.SUM, "prod": dist.ReduceOp.PRODUCT, "max": dist.ReduceOp.MAX,
           "min": dist.ReduceOp.MIN, "avg": dist.ReduceOp.AVG}
# A tensor whose bits we can copy to/from numpy: same width, numpy-native.
_BITS_VIEW = {"bfloat16": torch.int16}


def unsupported(kind: str, dtype: DType, redop: str | None) -> str | None:
    """Why torch.distributed with `kind` cannot run `dtype` (reduced with `redop`), or None."""
    if dtype.name not in _TORCH_DTYPES:
        return (f"torch.distributed ({kind}) has no {dtype.name} tensors for collectives; "
                "use int32/int64, or --backend mpi")
    if redop == "avg" and dtype.kind != "float":
        return f"{kind} cannot average {dtype.name} (integer avg); use --redop sum or a floating --dtype"
    return None


class StreamHold:
    """How long the stream is held before each per-iteration start event, shared by the timers of one rank.

    An idle GPU runs a start event the moment it is recorded, so the time up to the end event would include
    torch's dispatch and NCCL's enqueue of the operation: small messages would read several times too slow.
    As nvbandwidth does (it queues a spin kernel ahead of its start event), each iteration first queues a
    device-side spin (torch.cuda._sleep), then the start event, then the operation: the host enqueues all of
    it while the GPU spins, and the start event fires when the spin ends, with the operation already queued.
    Whether that held is checked, not assumed: if the start event had already fired when the operation was
    enqueued, that iteration includes launch cost (counted in `unheld`) and the hold doubles."""

    START_US = 100.0
    MAX_US = 20_000.0

    def __init__(self, clock_khz: int | None) -> None:
        self.us = self.START_US
        self.clock_khz = clock_khz or 2_000_000  # unknown clock: assume 2 GHz (the hold is verified anyway)
        self.unheld = 0

    def cycles(self) -> int:
        return int(self.us * self.clock_khz / 1e3)

    def missed(self) -> None:
        self.unheld += 1
        if self.us < self.MAX_US:
            self.us = min(self.MAX_US, self.us * 2)
        print(f"fabricbench: per-iter timing: the stream hold was shorter than the host's enqueue time, so "
              f"one iteration includes launch cost; hold now {self.us:.0f} us", file=sys.stderr, flush=True)


class CudaEventTimer(Timer):
    """One operation's GPU time between CUDA events on the current stream, launch cost excluded: the stream
    is held by a device-side spin before the start event (StreamHold), and a start event that fired before
    the operation was enqueued is detected and counted."""

    def __init__(self, hold: StreamHold | None = None) -> None:
        super().__init__()
        self._hold = hold
        self._begin = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self.held: bool | None = None

    def start(self) -> None:
        if self._hold is not None:
            torch.cuda._sleep(self._hold.cycles())  # queued ahead: the GPU spins while the host enqueues
        self._begin.record()

    def stop(self) -> None:
        if self._hold is not None:
            self.held = not self._begin.query()  # fired already: the GPU waited for the host (launch cost)
            if not self.held:
                self._hold.missed()
        self._end.record()

    def elapsed_ns(self) -> int:
        self._end.synchronize()
        return int(self._begin.elapsed_time(self._end) * 1e6)


class TorchBackend(Backend):
    primitives = frozenset({"all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all",
                            "sendrecv", "send"})
    out_of_place = frozenset({"all_gather", "reduce_scatter", "all_to_all", "sendrecv", "send"})

    def __init__(self, kind: str, ranks, timeout_s: float):
        self.name = kind
        self.rank, self.world_size = ranks.rank, ranks.world_size
        self.device = "cuda" if kind == "nccl" else "cpu"
        self._hold: StreamHold | None = None
        if self.device == "cuda":
            self.gpu = gpu_for_local_rank(ranks.local_rank, torch.cuda.device_count())
            torch.cuda.set_device(self.gpu)
            self._dev = torch.device("cuda", self.gpu)
        else:
            self._dev = torch.device("cpu")
        # timeout_s is the launcher's no-progress limit (0: none); torch's own watchdog only as a last resort
        timeout = datetime.timedelta(seconds=max(30.0, timeout_s) if timeout_s else 7 * 86400)
        init = f"tcp://{_url_host(ranks.master_addr)}:{ranks.master_port}"
        kwargs: dict[str, Any] = {}
        if self.device == "cuda":
            kwargs["device_id"] = self._dev  # eager NCCL communicator creation
        dist.init_process_group(kind, init_method=init, rank=self.rank, world_size=self.world_size,
                                timeout=timeout, **kwargs)
        self._ctrl = dist.new_group(backend="gloo", timeout=timeout) if kind != "gloo" else None
        self._group = None  # the data path's process group (None: the whole world)
        self._members: list[int] | None = None  # world rank of each group rank, when split

    def split(self, members: list[int], all_groups: list[list[int]]) -> TorchBackend:
        import copy

        mine = None
        for group in all_groups:  # every rank creates every group, in the same order (torch requires it)
            pg = dist.new_group(ranks=group, backend=self.name)
            if group == members:
                mine = pg
        sub = copy.copy(self)
        sub._group, sub._members = mine, list(members)
        sub.rank, sub.world_size = members.index(self.rank), len(members)
        return sub

    def _peer(self, group_rank: int) -> int:
        """torch's point-to-point calls take world ranks even inside a group."""
        return self._members[group_rank] if self._members else group_rank

    # -- capabilities -------------------------------------------------------------------------------------
    def unsupported(self, dtype: DType, redop: str | None) -> str | None:
        return unsupported(self.name, dtype, redop)

    # -- buffers ------------------------------------------------------------------------------------------
    def alloc(self, count: int, dtype: DType) -> torch.Tensor:
        return torch.empty(count, dtype=_TORCH_DTYPES[dtype.name], device=self._dev)

    def view(self, buf: torch.Tensor, offset: int, count: int) -> torch.Tensor:
        return buf.narrow(0, offset, count)

    def write(self, buf: torch.Tensor, host: np.ndarray) -> None:
        src = torch.from_numpy(np.ascontiguousarray(host))
        if buf.dtype in (torch.bfloat16,):
            buf.view(_BITS_VIEW["bfloat16"]).copy_(src.view(_BITS_VIEW["bfloat16"]))
        else:
            buf.copy_(src)

    def read(self, buf: torch.Tensor) -> np.ndarray:
        t = buf.detach()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
            return t.cpu().numpy().view(np.uint16)
        return t.cpu().numpy()

    def poison(self, buf: torch.Tensor) -> None:
        buf.view(torch.uint8).fill_(0xA5)

    # -- communication ------------------------------------------------------------------------------------
    def all_reduce(self, send, recv, redop):
        dist.all_reduce(recv, op=_REDOPS[redop], group=self._group)  # in place: the driver passes send is recv

    def all_gather(self, send, recv):
        dist.all_gather_into_tensor(recv, send, group=self._group)

    def reduce_scatter(self, send, recv, redop):
        dist.reduce_scatter_tensor(recv, send, op=_REDOPS[redop], group=self._group)

    def broadcast(self, send, recv, root):
        dist.broadcast(recv, src=self._peer(root), group=self._group)

    def reduce(self, send, recv, redop, root):
        dist.reduce(recv, dst=self._peer(root), op=_REDOPS[redop], group=self._group)

    def all_to_all(self, send, recv):
        dist.all_to_all_single(recv, send, group=self._group)

    def sendrecv(self, send, recv, dst, src):
        if dst == self.rank and src == self.rank:
            recv.copy_(send)
            return
        ops = [dist.P2POp(dist.isend, send, self._peer(dst), self._group),
               dist.P2POp(dist.irecv, recv, self._peer(src), self._group)]
        for work in dist.batch_isend_irecv(ops):
            work.wait()

    nonblocking_window = True

    def send_window(self, buf, dst, n):
        works = [dist.isend(buf, self._peer(dst), group=self._group) for _ in range(n)]
        for work in works:
            work.wait()

    def recv_window(self, buf, src, n):
        works = [dist.irecv(buf, self._peer(src), group=self._group) for _ in range(n)]
        for work in works:
            work.wait()

    def exchange_window(self, send, recv, peer, n):
        p = self._peer(peer)
        ops = [dist.P2POp(dist.irecv, recv, p, self._group) for _ in range(n)]
        ops += [dist.P2POp(dist.isend, send, p, self._group) for _ in range(n)]
        for work in dist.batch_isend_irecv(ops):
            work.wait()

    def send(self, buf, dst):
        dist.send(buf, self._peer(dst), group=self._group)

    def recv(self, buf, src):
        dist.recv(buf, self._peer(src), group=self._group)

    # -- control plane and timing -------------------------------------------------------------------------
    def barrier(self) -> None:
        dist.barrier(group=self._ctrl)

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize(self._dev)

    def gather_object(self, obj: Any) -> list[Any] | None:
        out: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0, group=self._ctrl)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._ctrl)
        return box[0]

    def timer(self) -> Timer:
        if self.device != "cuda":
            return Timer()
        if self._hold is None:
            props = torch.cuda.get_device_properties(self._dev)
            self._hold = StreamHold(getattr(props, "clock_rate", None))
        return CudaEventTimer(self._hold)

    def gpu_bus_id(self) -> str | None:
        if self.device != "cuda":
            return None
        props = torch.cuda.get_device_properties(self._dev)
        try:
            return f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        except AttributeError:  # older torch: no PCI fields
            return None

    def capture(self, fn):
        """nccl-tests -G: the timed loop is captured once and replayed, so launch overhead is not measured."""
        if self.device != "cuda":
            return super().capture(fn)
        side = torch.cuda.Stream(self._dev)
        side.wait_stream(torch.cuda.current_stream(self._dev))
        with torch.cuda.stream(side):  # one eager pass on a side stream, as torch asks before capturing
            fn()
        torch.cuda.current_stream(self._dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, **graph_capture_kwargs()):
            fn()
        torch.cuda.synchronize(self._dev)
        return graph.replay

    def versions(self) -> dict[str, Any]:
        info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version()}
        if self.device == "cuda":
            try:
                info["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version())
            except Exception:  # noqa: BLE001 - a version we cannot read is simply absent
                pass
            info["cuda"] = torch.version.cuda
            info["gpu_model"] = torch.cuda.get_device_name(self._dev)
        return info

    def close(self) -> None:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - teardown after a failure must not mask the failure
                pass


def gpu_for_local_rank(local_rank: int, count: int) -> int:
    """This rank's GPU: its local rank. More local ranks than GPUs is refused here, in one line, instead of
    wrapping around onto a GPU another rank holds (NCCL then fails later with a duplicate-GPU error)."""
    if count < 1:
        raise UsageError("the nccl backend needs a GPU, and this rank sees none (check CUDA_VISIBLE_DEVICES); "
                         "use --backend gloo for CPUs")
    if local_rank >= count:
        raise UsageError(f"local rank {local_rank} has no GPU of its own: this node shows {count} GPU(s); run at "
                         f"most {count} rank(s) per node (--nprocs {count}, or --ntasks-per-node={count})")
    return local_rank


def graph_capture_kwargs() -> dict[str, Any]:
    """capture_error_mode="thread_local": in the default global mode, a CUDA call from another thread during
    capture (NCCL's watchdog polling its events) invalidates the capture. torch before 2.1 has no such
    argument: refused there rather than failing part-way."""
    try:
        params = inspect.signature(torch.cuda.graph.__init__).parameters
    except (TypeError, ValueError):
        params = {}
    if "capture_error_mode" not in params:
        raise UsageError(f"--cuda-graph needs torch 2.1 or newer (capture_error_mode='thread_local', so that "
                         f"NCCL's watchdog thread does not break the capture); this is torch {torch.__version__}")
    return {"capture_error_mode": "thread_local"}


def _url_host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr


