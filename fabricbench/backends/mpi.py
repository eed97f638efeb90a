"""mpi4py backend: MPI collectives and point-to-point calls on MPI.COMM_WORLD.

Ranks are started by mpirun (the local launcher does it for --backend mpi); rank and world size come from
MPI itself and must agree with what the launcher's environment said.

Buffers:
- CPU: numpy arrays, typed for MPI by mpi4py from the array itself.
- GPU (device 'cuda', or 'auto' with CuPy installed and a GPU visible): CuPy arrays. A CUDA-aware MPI is
  handed device memory directly (after the CuPy stream is synchronised, since MPI does not know the stream).
  An MPI that is not CUDA-aware (Debian's Open MPI, for one) cannot read device memory, so every call copies
  its input to a host mirror, runs MPI on host memory and copies the result back: `placement_note` is then
  'host-staged' and the reported times and bandwidths INCLUDE those device<->host copies; they measure the
  staging path, not the fabric between GPUs.
CUDA-awareness: FABRICBENCH_MPI_CUDA_AWARE=0/1 if set, else the library's own answer
(MPIX_Query_cuda_support through mpi4py >= 4), else Open MPI's build flag from `ompi_info`.

In place: when send and receive share memory the call uses MPI.IN_PLACE. MPI leaves an in-place
reduce_scatter's block at the start of the buffer; nccl-tests' layout wants it at rank*count, so the block
is then moved there (one block copy, inside the timed call). Broadcast always runs in place.

Types: 16-bit floats (half; bfloat16, which travels as its uint16 bits) move as uint16, since MPI has no
standard 16-bit float type; they cannot be reduced. avg is not an MPI reduction.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fabricbench.backends.base import Backend, Timer
from fabricbench.engine.dtypes import DType
from fabricbench.errors import UsageError

CUDA_AWARE_ENV = "FABRICBENCH_MPI_CUDA_AWARE"
DEVICES = ("auto", "cpu", "cuda")
_REDOPS = {"sum": "SUM", "prod": "PROD", "max": "MAX", "min": "MIN"}  # fabricbench name -> MPI.<op>
_TAG = 0


def unsupported(dtype: DType, redop: str | None) -> str | None:
    """Why MPI cannot run `dtype` reduced with `redop` (None: only moved), or None.

    Runs in the launcher process too, so it must not import mpi4py.MPI (that would initialise MPI there).
    """
    if redop is None:
        return None
    if redop == "avg":
        return "MPI has no avg reduction; use --redop sum (or --backend gloo/nccl for avg)"
    if redop not in _REDOPS:
        return f"MPI has no '{redop}' reduction; use one of {', '.join(_REDOPS)}"
    if dtype.kind == "float" and dtype.itemsize == 2:
        return (f"MPI has no standard {dtype.name} reduction; use --dtype float, or run only ops that move "
                "data without reducing (all_gather broadcast all_to_all sendrecv p2p)")
    return None


# -- GPU placement decision (pure functions, unit-tested with fakes) ----------------------------------------
def cuda_aware_from_env(env: Mapping[str, str] | None = None) -> bool | None:
    """The FABRICBENCH_MPI_CUDA_AWARE override: True/False, or None when unset."""
    env = os.environ if env is None else env
    raw = env.get(CUDA_AWARE_ENV, "").strip().lower()
    if raw == "":
        return None
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise UsageError(f"{CUDA_AWARE_ENV}='{env[CUDA_AWARE_ENV]}': set 1 (MPI reads GPU memory) or 0 (stage GPU "
                     "buffers through host memory), or unset it to detect")


def ompi_info_text() -> str:
    """`ompi_info --parsable --all`, or '' when it is absent or fails."""
    exe = shutil.which("ompi_info")
    if not exe:
        return ""
    try:
        return subprocess.run([exe, "--parsable", "--all"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def mpi_cuda_aware(mpi, env: Mapping[str, str] | None = None,
                   ompi_info: Callable[[], str] = ompi_info_text) -> bool:
    """Can this MPI library read and write GPU memory? (`mpi`: the mpi4py.MPI module, or a fake.)"""
    forced = cuda_aware_from_env(env)
    if forced is not None:
        return forced
    query = getattr(mpi, "Query_cuda_support", None)  # mpi4py >= 4: MPIX_Query_cuda_support, a runtime answer
    if query is not None:
        try:
            return bool(query())
        except Exception:  # noqa: BLE001 - an MPI without the extension: fall through to ompi_info
            pass
    if "Open MPI" not in mpi.Get_library_version():
        return False  # another MPI's ompi_info on PATH would describe the wrong library
    return any(line.strip().endswith("mpi_built_with_cuda_support:value:true")
               for line in ompi_info().splitlines())


def plan_device(device: str, gpus: int, cuda_aware: Callable[[], bool]) -> tuple[str, str]:
    """Where buffers live: ('cpu', ''), ('cuda', '') for device memory handed to MPI, or ('cuda', 'host-staged').

    `gpus`: GPUs CuPy sees (0 without CuPy). `cuda_aware` is only asked when GPU buffers are wanted.
    """
    if device not in DEVICES:
        raise UsageError(f"device '{device}' for --backend mpi: choose one of {', '.join(DEVICES)}")
    if device == "cpu" or (device == "auto" and gpus == 0):
        return "cpu", ""
    if gpus == 0:
        raise UsageError("GPU buffers for --backend mpi need CuPy and a visible GPU, and none was found; "
                         "pip install 'fabricbench[gpu]', or run on the CPU")
    return "cuda", "" if cuda_aware() else "host-staged"


def _load_cupy():
    """CuPy, or None when it is not installed or cannot load (no CUDA driver)."""
    try:
        import cupy
    except Exception:  # noqa: BLE001 - ImportError, or a CUDA library that fails to load
        return None
    return cupy


def _gpu_count(cupy) -> int:
    if cupy is None:
        return 0
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - CUDA runtime errors: no usable GPU
        return 0


def _load_mpi():
    import mpi4py

    if "mpi4py.MPI" not in sys.modules:
        # Only this thread calls MPI (the heartbeat thread writes files), and THREAD_MULTIPLE would add
        # locking to every call we time.
        mpi4py.rc.thread_level = "funneled"
    from mpi4py import MPI

    return MPI


# -- buffers --------------------------------------------------------------------------------------------
class Staged:
    """A GPU buffer with its host mirror (same length): MPI sees `host`; the driver reads and writes `dev`."""

    __slots__ = ("dev", "host")

    def __init__(self, dev, host: np.ndarray):
        self.dev, self.host = dev, host


def _wire(buf):
    """The array MPI gets: 16-bit floats as their uint16 bits (MPI has no standard 16-bit float type)."""
    if buf.dtype.kind == "f" and buf.dtype.itemsize == 2:
        return buf.view(np.uint16)
    return buf


def _shares(a, b) -> bool:
    """True when two buffers overlap in memory (the driver's in-place views of one allocation)."""
    if isinstance(a, np.ndarray):
        return bool(np.may_share_memory(a, b))
    a0, b0 = a.data.ptr, b.data.ptr  # CuPy: device pointers
    return a0 < b0 + b.nbytes and b0 < a0 + a.nbytes


class _SyncedTimer(Timer):
    """Host clock read after a device sync at both ends: covers everything the GPU did for the call."""

    def __init__(self, sync: Callable[[], None]):
        super().__init__()
        self._sync = sync

    def start(self) -> None:
        self._sync()
        super().start()

    def stop(self) -> None:
        self._sync()
        super().stop()


class MPIBackend(Backend):
    name = "mpi"
    primitives = frozenset({"all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all",
                            "sendrecv", "send"})
    # Broadcast is in place only (the driver passes send is recv); the rest take either layout.
    out_of_place = frozenset({"all_reduce", "all_gather", "reduce_scatter", "reduce", "all_to_all", "sendrecv",
                              "send"})

    def __init__(self, ranks, device: str = "auto"):
        env_aware = cuda_aware_from_env()  # a bad override fails here, on every rank
        cupy = _load_cupy() if device != "cpu" else None
        gpus = _gpu_count(cupy)
        if gpus and device != "cpu":
            # One GPU per local rank, chosen before MPI initialises (a CUDA-aware MPI binds to it then).
            self.gpu = ranks.local_rank % gpus
            cupy.cuda.Device(self.gpu).use()
        self._MPI = _load_mpi()
        self.device, self.placement_note = plan_device(device, gpus, lambda: mpi_cuda_aware(self._MPI))
        self._cp = cupy if self.device == "cuda" else None
        self._staged = self.placement_note == "host-staged"
        # None on CPU until versions() asks: nothing else needs the answer there.
        self._cuda_aware = (not self._staged) if self.device == "cuda" else env_aware
        self._comm = self._ctrl = self._MPI.COMM_WORLD  # data path; control plane (stays the world on split)
        self.rank, self.world_size = self._comm.Get_rank(), self._comm.Get_size()
        if (self.rank, self.world_size) != (ranks.rank, ranks.world_size):
            raise UsageError(f"MPI says this process is rank {self.rank} of {self.world_size} but the launcher "
                             f"environment ({ranks.source}) says rank {ranks.rank} of {ranks.world_size}; start "
                             "--backend mpi ranks with mpirun -np N (or --nprocs N), not torchrun")
        self._ops = {name: getattr(self._MPI, op) for name, op in _REDOPS.items()}

    def split(self, members: list[int], all_groups: list[list[int]]) -> MPIBackend:
        # Comm.Split is collective over the world: every rank calls it once, coloured by its group. Ranks in the
        # new communicator are group ranks, which is what the driver passes as roots and peers.
        sub = copy.copy(self)
        sub._comm = self._comm.Split(all_groups.index(members), members.index(self.rank))
        sub.rank, sub.world_size = sub._comm.Get_rank(), sub._comm.Get_size()
        return sub

    # -- capabilities -------------------------------------------------------------------------------------
    def unsupported(self, dtype: DType, redop: str | None) -> str | None:
        return unsupported(dtype, redop)

    # -- buffers ------------------------------------------------------------------------------------------
    def alloc(self, count: int, dtype: DType) -> Any:
        if self._cp is None:
            return np.empty(count, dtype.host_dtype)
        dev = self._cp.empty(count, dtype.host_dtype)
        return Staged(dev, np.empty(count, dtype.host_dtype)) if self._staged else dev

    def view(self, buf: Any, offset: int, count: int) -> Any:
        if isinstance(buf, Staged):
            return Staged(buf.dev[offset:offset + count], buf.host[offset:offset + count])
        return buf[offset:offset + count]

    def write(self, buf: Any, host: np.ndarray) -> None:
        dev = buf.dev if isinstance(buf, Staged) else buf
        if isinstance(dev, np.ndarray):
            dev[...] = host
        else:
            dev.set(np.ascontiguousarray(host, dtype=dev.dtype))

    def read(self, buf: Any) -> np.ndarray:
        dev = buf.dev if isinstance(buf, Staged) else buf
        return dev.copy() if isinstance(dev, np.ndarray) else dev.get()

    def poison(self, buf: Any) -> None:
        dev = buf.dev if isinstance(buf, Staged) else buf
        dev.view(np.uint8).fill(0xA5)

    # -- staging: what MPI gets -------------------------------------------------------------------------
    def _ready(self) -> None:
        """Before any MPI call on GPU buffers: MPI does not order itself after the CuPy stream, so a pending
        write or poison must finish first."""
        if self._cp is not None:
            self._cp.cuda.get_current_stream().synchronize()

    @staticmethod
    def _in(buf):
        """`buf` as MPI input; host-staged: copied to its mirror first."""
        if isinstance(buf, Staged):
            buf.dev.get(out=buf.host)
            return _wire(buf.host)
        return _wire(buf)

    @staticmethod
    def _out(buf):
        """`buf` as MPI output (nothing copied in: MPI overwrites it)."""
        return _wire(buf.host if isinstance(buf, Staged) else buf)

    @staticmethod
    def _done(buf) -> None:
        """Host-staged: copy MPI's result back to the device buffer."""
        if isinstance(buf, Staged):
            buf.dev.set(buf.host)

    # -- communication ------------------------------------------------------------------------------------
    def all_reduce(self, send, recv, redop):
        self._ready()
        s, r = self._in(send), self._out(recv)
        self._comm.Allreduce(self._MPI.IN_PLACE if _shares(s, r) else s, r, self._ops[redop])
        self._done(recv)

    def all_gather(self, send, recv):
        self._ready()
        s, r = self._in(send), self._out(recv)
        # In place, our block already sits at recv[rank*count], which is where MPI.IN_PLACE takes it from.
        self._comm.Allgather(self._MPI.IN_PLACE if _shares(s, r) else s, r)
        self._done(recv)

    def reduce_scatter(self, send, recv, redop):
        self._ready()
        s, r = self._in(send), self._out(recv)
        if _shares(s, r):
            # MPI.IN_PLACE leaves our block at the start of the buffer; nccl-tests' layout has it at rank*count.
            self._comm.Reduce_scatter_block(self._MPI.IN_PLACE, s, self._ops[redop])
            if self.rank:
                r[...] = s[:len(r)]  # blocks 0 and rank do not overlap
        else:
            self._comm.Reduce_scatter_block(s, r, self._ops[redop])
        self._done(recv)

    def broadcast(self, send, recv, root):
        self._ready()
        r = self._out(recv)
        if self.rank == root:
            s = self._in(send)
            if not _shares(s, r):
                r[...] = s  # out of place on the root: MPI broadcasts from one buffer
        self._comm.Bcast(r, root=root)
        self._done(recv)

    def reduce(self, send, recv, redop, root):
        self._ready()
        s = self._in(send)
        if self.rank != root:  # only the root's receive buffer is defined
            self._comm.Reduce(s, None, self._ops[redop], root=root)
            return
        r = self._out(recv)
        self._comm.Reduce(self._MPI.IN_PLACE if _shares(s, r) else s, r, self._ops[redop], root=root)
        self._done(recv)

    def all_to_all(self, send, recv):
        self._ready()
        s, r = self._in(send), self._out(recv)
        self._comm.Alltoall(self._MPI.IN_PLACE if _shares(s, r) else s, r)
        self._done(recv)

    def sendrecv(self, send, recv, dst, src):
        self._ready()
        s, r = self._in(send), self._out(recv)
        if dst == self.rank and src == self.rank:
            r[...] = s  # one rank: a copy, as NCCL does
        else:
            self._comm.Sendrecv(s, dst, _TAG, r, src, _TAG)
        self._done(recv)

    def send(self, buf, dst):
        self._ready()
        self._comm.Send(self._in(buf), dst, _TAG)

    def recv(self, buf, src):
        self._ready()
        self._comm.Recv(self._out(buf), src, _TAG)
        self._done(buf)

    nonblocking_window = True

    def send_window(self, buf, dst, n):
        self._ready()
        s = self._in(buf)
        self._MPI.Request.Waitall([self._comm.Isend(s, dst, _TAG) for _ in range(n)])

    def recv_window(self, buf, src, n):
        self._ready()
        r = self._out(buf)
        self._MPI.Request.Waitall([self._comm.Irecv(r, src, _TAG) for _ in range(n)])
        self._done(buf)

    def exchange_window(self, send, recv, peer, n):
        self._ready()
        s, r = self._in(send), self._out(recv)
        reqs = [self._comm.Irecv(r, peer, _TAG) for _ in range(n)]  # receives first, as osu_bibw posts them
        reqs += [self._comm.Isend(s, peer, _TAG) for _ in range(n)]
        self._MPI.Request.Waitall(reqs)
        self._done(recv)

    # -- control plane and timing -------------------------------------------------------------------------
    def barrier(self) -> None:
        self._ctrl.Barrier()

    def synchronize(self) -> None:
        self._ready()

    def gather_object(self, obj: Any) -> list[Any] | None:
        return self._ctrl.gather(obj, root=0)

    def broadcast_object(self, obj: Any) -> Any:
        return self._ctrl.bcast(obj, root=0)

    def timer(self) -> Timer:
        return _SyncedTimer(self.synchronize) if self._cp is not None else Timer()

    def gpu_bus_id(self) -> str | None:
        if self._cp is None:
            return None
        try:
            return self._cp.cuda.runtime.deviceGetPCIBusId(self.gpu)
        except Exception:  # noqa: BLE001 - no PCI id: the rank is simply not bound
            return None

    def versions(self) -> dict[str, Any]:
        import mpi4py

        if self._cuda_aware is None:  # a CPU run: asked only for the record
            self._cuda_aware = mpi_cuda_aware(self._MPI)
        # The library string may carry its C terminator; the first line names library and version.
        lines = self._MPI.Get_library_version().replace("\x00", "").strip().splitlines()
        info: dict[str, Any] = {"mpi": lines[0].strip() if lines else "", "mpi4py": mpi4py.__version__,
                                "mpi_cuda_aware": bool(self._cuda_aware)}
        if self._cp is not None:
            info["cupy"] = self._cp.__version__
        return info

    def close(self) -> None:
        """Nothing to tear down: mpi4py finalises MPI when the process exits (after every rank's last call)."""
