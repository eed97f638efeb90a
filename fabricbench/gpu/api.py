"""The GPU calls behind one interface: `GpuApi`. `CupyApi` runs them on real GPUs (CuPy, the kernels of
cuda_kernels/); tests replace it with `fabricbench.gpu.fake.FakeGpuApi`. Everything above this interface
(pairs, samples, verification, byte accounting, matrices, result rows) is host logic and is tested without a
GPU.

Timed copies follow nvbandwidth: each stream first runs the gate kernel, which spins on a host-mapped flag;
the start event, the copies (SM: one launch that loops; CE: a loop of async copies) and the end event are
queued behind it; then the host releases the flag. Every stream of one measurement waits on the same flag.
"""

from __future__ import annotations

import abc
import ctypes
import os
from dataclasses import dataclass, field

from fabricbench.errors import UsageError

ENV_API = "FABRICBENCH_GPU_API"  # 'fake:<spec.json>' selects the fake interface (tests only; labelled FAKE)
GATE_TIMEOUT_S = 10.0
CE_MAX_COPIES = 256  # async copies queued behind one gate (the stream's queue must not fill while it spins)


class PeerAccessError(UsageError):
    """Two GPUs cannot access each other's memory directly (no NVLink/PCIe peer path)."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    sm_count: int
    total_bytes: int
    free_bytes: int
    pci_bus_id: str  # '0000:1b:00.0'
    compute_capability: str  # '9.0'
    l2_bytes: int = 0  # L2 cache size (0: unknown)


@dataclass
class Buffer:
    device: int
    nbytes: int
    ptr: int
    handle: object = field(default=None, repr=False)  # the implementation's own object (a cupy array, ...)

    @property
    def words(self) -> int:
        return self.nbytes // 4


@dataclass(frozen=True)
class Transfer:
    """Copy all of `src` into `dst`; `exec_device` runs it (its SMs, or the copy engine of its stream)."""

    src: Buffer
    dst: Buffer
    exec_device: int


@dataclass
class Timing:
    """Seconds from the gate's release to the end of each transfer's copies (one value per transfer, each
    from its own stream's events; a split-warp launch on one GPU gives both directions the same time), and whether a gate expired (then launch cost
    may be in the time and the sample is discarded)."""

    seconds: list[float]
    gate_expired: bool = False


@dataclass(frozen=True)
class VerifyResult:
    mismatches: int
    first_bad: int | None  # word index of the first mismatch


class GpuApi(abc.ABC):
    """What the measurements need from the GPUs."""

    name = "abstract"
    fake = False

    @abc.abstractmethod
    def device_count(self) -> int: ...

    @abc.abstractmethod
    def device_info(self, index: int) -> DeviceInfo: ...

    @abc.abstractmethod
    def can_access_peer(self, device: int, peer: int) -> bool: ...

    @abc.abstractmethod
    def enable_peer_access(self, device: int, peer: int) -> None:
        """Let `device` access `peer`'s memory; raises PeerAccessError when it cannot."""

    @abc.abstractmethod
    def alloc(self, device: int, nbytes: int) -> Buffer: ...

    @abc.abstractmethod
    def free(self, buf: Buffer) -> None: ...

    @abc.abstractmethod
    def fill(self, buf: Buffer, seed: int, poison: bool = False) -> None: ...

    @abc.abstractmethod
    def verify(self, buf: Buffer, seed: int) -> VerifyResult: ...

    @abc.abstractmethod
    def corrupt(self, buf: Buffer, word: int) -> None:
        """Flip every bit of one word (the planted mismatch of the self-test)."""

    @abc.abstractmethod
    def read_words(self, buf: Buffer, start: int, count: int):
        """Words of a buffer as a numpy uint32 array (for comparing the GPU's pattern with the host's)."""

    @abc.abstractmethod
    def copy(self, transfers: list[Transfer], engine: str, loops: int, blocks_per_sm: int = 2,
             gate_timeout_s: float = GATE_TIMEOUT_S) -> Timing:
        """Copy each transfer `loops` times behind one gate and time it. engine 'sm': our copy kernel (two
        transfers with one exec device: one split-warp launch); 'ce': async memcpy on a stream of each
        transfer's exec device (the copy engines; cudaMemcpy device-to-device when src and dst are local)."""

    @abc.abstractmethod
    def gate_check(self, device: int, timeout_s: float) -> bool:
        """Run a gate that is never released; True when it gave up by itself (its spin is bounded)."""

    @abc.abstractmethod
    def chase(self, exec_device: int, memory_device: int, lines: int, hops: int, seed: int,
              evict_bytes: int = 0) -> float:
        """Pointer-chase `hops` loads through `lines` 128-byte lines on `memory_device`, run by one thread of
        `exec_device`; returns seconds per access. The chain is built (and a warm-up chase run) first; then a
        scratch buffer of `evict_bytes` is written on each GPU involved so that the timed chase starts with
        the chain out of L2 (fabricbench.gpu.cache.evict_bytes says how much)."""

    def load_kernels(self, device: int) -> list[str]:
        """Compile and load every kernel for `device` (raises with the compiler's log); their names."""
        return []

    def versions(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def get_api() -> GpuApi:
    """The fake interface when $FABRICBENCH_GPU_API says so, else CuPy on the real GPUs (UsageError when there
    is none)."""
    spec = os.environ.get(ENV_API, "")
    if spec.startswith("fake"):
        from fabricbench.gpu.fake import FakeGpuApi

        return FakeGpuApi.from_spec(spec.partition(":")[2] or None)
    return CupyApi()


BLOCKING_ENV_HELP = ("every gate would wait out its timeout, since the host cannot queue the copies behind a gate "
                     "that blocks it")


def check_launch_environment(environ=None) -> None:
    """Refuse up front what makes every kernel launch synchronous: CUDA_LAUNCH_BLOCKING=1, or a sanitizer
    injected into the process (compute-sanitizer loads its library through CUDA_INJECTION64_PATH/LD_PRELOAD).
    Then the gate kernel blocks the host that should release it, and each sample costs the gate's timeout."""
    env = os.environ if environ is None else environ
    if env.get("CUDA_LAUNCH_BLOCKING", "").strip() not in ("", "0"):
        raise UsageError(f"CUDA_LAUNCH_BLOCKING={env['CUDA_LAUNCH_BLOCKING']} makes every launch synchronous: "
                         f"{BLOCKING_ENV_HELP}; unset it (export CUDA_LAUNCH_BLOCKING=0)")
    for key in ("CUDA_INJECTION64_PATH", "LD_PRELOAD"):
        if "sanitizer" in env.get(key, "").lower():
            raise UsageError(f"{key}={env[key]}: running under compute-sanitizer serializes launches: "
                             f"{BLOCKING_ENV_HELP}; measure without the sanitizer")


def cupy_fix_hint(driver_version: int | None = None) -> str:
    """The CuPy package that brings its own CUDA components (NVRTC, headers) for this driver."""
    major = (driver_version or 0) // 1000
    pkg, extra = ("cupy-cuda12x", "gpu") if major == 12 else ("cupy-cuda13x", "gpu-cuda13")
    return (f"pip install '{pkg}[ctk]>=14' (CuPy with the CUDA components it compiles with: NVRTC and headers "
            f"from NVIDIA's wheels; the same as pip install 'fabricbench[{extra}]')")


def check_free_memory(api: GpuApi, device: int, nbytes: int, what: str) -> None:
    info = api.device_info(device)
    if nbytes > info.free_bytes:
        raise UsageError(f"{what} needs {_gib(nbytes)} on GPU {device} ({info.name}) but only {_gib(info.free_bytes)} "
                         f"of {_gib(info.total_bytes)} is free; choose a smaller --size")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


# -- the real one: CuPy ------------------------------------------------------------------------------------------
class CupyApi(GpuApi):
    name = "cupy"

    def __init__(self) -> None:
        try:
            import cupy
        except ImportError as err:
            raise UsageError(f"no CUDA GPU support: CuPy is not installed ({err}); {cupy_fix_hint()}") from None
        self.cp = cupy
        self.rt = cupy.cuda.runtime
        try:
            n = self.rt.getDeviceCount()
        except Exception as err:  # CUDARuntimeError: no driver, no device
            raise UsageError(f"no CUDA GPU visible ({_cuda_err(err)}); run on a machine with a GPU and its "
                             "driver, and check CUDA_VISIBLE_DEVICES") from None
        if n < 1:
            raise UsageError("no CUDA GPU visible (device count 0); check CUDA_VISIBLE_DEVICES")
        self._n = n
        self._streams: dict[int, list] = {}
        self._sms: dict[int, int] = {}
        self._peer_enabled: set[tuple[int, int]] = set()
        self._flag_ptr = self.rt.hostAlloc(64, 1 | 2)  # cudaHostAllocPortable | cudaHostAllocMapped
        self._flag = (ctypes.c_int * 2).from_address(self._flag_ptr)  # [0] release flag, [1] expired
        self._flag_dev = self._device_pointer(self._flag_ptr)

    def _device_pointer(self, host_ptr: int) -> int:
        try:  # under UVA the host pointer is the device pointer; ask when the runtime can say
            return int(self.rt.pointerGetAttributes(host_ptr).devicePointer) or host_ptr
        except Exception:
            return host_ptr

    # devices
    def device_count(self) -> int:
        return self._n

    def device_info(self, index: int) -> DeviceInfo:
        props = self.rt.getDeviceProperties(index)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        with self.cp.cuda.Device(index):
            free, total = self.rt.memGetInfo()
            free += self.cp.get_default_memory_pool().free_bytes()
        try:
            bus = str(self.rt.deviceGetPCIBusId(index)).lower()
        except Exception:
            bus = f"{props.get('pciDomainID', 0):04x}:{props['pciBusID']:02x}:{props['pciDeviceID']:02x}.0"
        return DeviceInfo(index, name, int(props["multiProcessorCount"]), int(total), int(free), bus,
                          f"{props['major']}.{props['minor']}", int(props.get("l2CacheSize", 0) or 0))

    def can_access_peer(self, device: int, peer: int) -> bool:
        return device == peer or bool(self.rt.deviceCanAccessPeer(device, peer))

    def enable_peer_access(self, device: int, peer: int) -> None:
        if device == peer or (device, peer) in self._peer_enabled:
            return  # enabling twice fails with cudaErrorPeerAccessAlreadyEnabled: not asked twice
        if not self.can_access_peer(device, peer):
            raise PeerAccessError(f"GPU {device} cannot access GPU {peer}'s memory (no peer path: "
                                  "cudaDeviceCanAccessPeer says no)")
        with self.cp.cuda.Device(device):
            try:
                self.rt.deviceEnablePeerAccess(peer)
            except self.rt.CUDARuntimeError as err:
                # Enabled by someone else in this process (torch, an earlier CupyApi): not an error, but the
                # runtime keeps it as the thread's last error, which a later cudaGetLastError check (torch's
                # launch checks) would report against an innocent kernel. Clear it.
                self._clear_last_error()
                if "AlreadyEnabled" not in str(err) and getattr(err, "status", None) != 704:
                    raise PeerAccessError(f"enabling peer access GPU {device} -> GPU {peer} failed: "
                                          f"{_cuda_err(err)}") from None
        self._peer_enabled.add((device, peer))

    def _clear_last_error(self) -> None:
        """cudaGetLastError: returns and resets the runtime's last error. CuPy's own status check already calls
        it before raising (cupy_backends/cuda/api/runtime.pyx, check_status); this makes it explicit where
        CuPy exposes the call, and costs nothing where the error is already clear."""
        for name in ("getLastError", "peekAtLastError"):
            fn = getattr(self.rt, name, None)
            if fn is not None:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - it raises the error it clears: that is the point
                    pass
                return

    # memory
    def alloc(self, device: int, nbytes: int) -> Buffer:
        with self.cp.cuda.Device(device):
            try:
                arr = self.cp.empty(nbytes // 4, dtype=self.cp.uint32)
            except self.cp.cuda.memory.OutOfMemoryError:
                raise UsageError(f"GPU {device} is out of memory allocating {_gib(nbytes)}; choose a smaller "
                                 "--size") from None
        return Buffer(device, nbytes, int(arr.data.ptr), arr)

    def free(self, buf: Buffer) -> None:
        buf.handle = None

    # kernels
    def _kernel(self, module: str, name: str, device: int):
        from fabricbench.gpu.kernels import get_kernel

        return get_kernel(module, name, device)

    def _sm_count(self, device: int) -> int:
        if device not in self._sms:
            self._sms[device] = int(self.rt.getDeviceProperties(device)["multiProcessorCount"])
        return self._sms[device]

    def _grid(self, device: int, per_sm: int = 4) -> int:
        return max(1, self._sm_count(device) * per_sm)

    def fill(self, buf: Buffer, seed: int, poison: bool = False) -> None:
        np = _np()
        with self.cp.cuda.Device(buf.device):
            k = self._kernel("pattern", "fb_fill", buf.device)
            k((self._grid(buf.device),), (256,), (buf.handle, np.uint64(buf.words), np.uint64(seed),
                                                  np.uint32(1 if poison else 0)))
            self.cp.cuda.Device(buf.device).synchronize()

    def verify(self, buf: Buffer, seed: int) -> VerifyResult:
        np = _np()
        with self.cp.cuda.Device(buf.device):
            result = self.cp.array([0, 2**64 - 1], dtype=self.cp.uint64)
            k = self._kernel("pattern", "fb_verify", buf.device)
            k((self._grid(buf.device),), (256,), (buf.handle, np.uint64(buf.words), np.uint64(seed), result))
            bad, first = (int(x) for x in result.get())
        return VerifyResult(bad, first if bad else None)

    def corrupt(self, buf: Buffer, word: int) -> None:
        np = _np()
        with self.cp.cuda.Device(buf.device):
            self._kernel("pattern", "fb_corrupt", buf.device)((1,), (1,), (buf.handle, np.uint64(word)))
            self.cp.cuda.Device(buf.device).synchronize()

    def read_words(self, buf: Buffer, start: int, count: int):
        with self.cp.cuda.Device(buf.device):
            return buf.handle[start:start + count].get()

    def _stream(self, device: int, k: int):
        streams = self._streams.setdefault(device, [])
        while len(streams) <= k:
            with self.cp.cuda.Device(device):
                streams.append(self.cp.cuda.Stream(non_blocking=True))
        return streams[k]

    def _gate(self, device: int, stream, timeout_s: float) -> None:
        np = _np()
        gate = self._kernel("gate", "fb_gate", device)
        with self.cp.cuda.Device(device), stream:  # CuPy launches on the current stream
            gate((1,), (1,), (np.uint64(self._flag_dev), np.uint64(self._flag_dev + 4),
                              np.uint64(int(timeout_s * 1e9))))

    def copy(self, transfers: list[Transfer], engine: str, loops: int, blocks_per_sm: int = 2,
             gate_timeout_s: float = GATE_TIMEOUT_S) -> Timing:
        np = _np()
        cp = self.cp
        if engine == "sm" and len(transfers) == 2 and transfers[0].exec_device == transfers[1].exec_device:
            groups = [(transfers[0].exec_device, transfers)]  # one split-warp launch
        else:
            groups = [(t.exec_device, [t]) for t in transfers]
        if engine == "ce" and loops > CE_MAX_COPIES:
            raise UsageError(f"--loops {loops}: at most {CE_MAX_COPIES} copy-engine copies are queued behind one "
                             "gate")
        from fabricbench.gpu.kernels import COPY_THREADS

        # Everything that can take time (compiling, querying) happens before the first gate spins.
        launches = []
        per_device_k: dict[int, int] = {}
        for device, group in groups:
            k = per_device_k.get(device, 0)
            per_device_k[device] = k + 1
            stream = self._stream(device, k)
            self._kernel("gate", "fb_gate", device)
            kernel = args = None
            if engine == "sm":
                n16 = np.uint64(group[0].src.nbytes // 16)
                if len(group) == 1:
                    t = group[0]
                    kernel = self._kernel("copy", "fb_copy", device)
                    args = (np.uint64(t.dst.ptr), np.uint64(t.src.ptr), n16, np.uint32(loops))
                else:
                    a, b = group
                    kernel = self._kernel("copy", "fb_copy_bidir", device)
                    args = (np.uint64(a.dst.ptr), np.uint64(a.src.ptr), np.uint64(b.dst.ptr), np.uint64(b.src.ptr),
                            n16, np.uint32(loops))
            elif engine != "ce":
                raise ValueError(f"unknown engine {engine!r}")
            with cp.cuda.Device(device):
                events = (cp.cuda.Event(), cp.cuda.Event())
            launches.append((device, group, stream, kernel, args, events, (self._sm_count(device) * blocks_per_sm,)))
        self._flag[0], self._flag[1] = 0, 0
        for device, group, stream, kernel, args, (start, end), grid in launches:
            with cp.cuda.Device(device):
                self._gate(device, stream, gate_timeout_s)
                start.record(stream)
                if engine == "sm":
                    with stream:
                        kernel(grid, (COPY_THREADS,), args)
                else:
                    t = group[0]
                    for _ in range(loops):
                        if t.src.device == t.dst.device:
                            self.rt.memcpyAsync(t.dst.ptr, t.src.ptr, t.src.nbytes, 3, stream.ptr)  # D2D
                        else:
                            self.rt.memcpyPeerAsync(t.dst.ptr, t.dst.device, t.src.ptr, t.src.device, t.src.nbytes,
                                                    stream.ptr)
                end.record(stream)
        events = [(start, end, len(group)) for _d, group, _s, _k, _a, (start, end), _g in launches]
        self._flag[0] = 1  # release every gate at once
        seconds: list[float] = []
        for start, end, n in events:
            end.synchronize()
            seconds += [cp.cuda.get_elapsed_time(start, end) / 1e3] * n
        return Timing(seconds, bool(self._flag[1]))

    def gate_check(self, device: int, timeout_s: float) -> bool:
        self._flag[0], self._flag[1] = 0, 0
        stream = self._stream(device, 0)
        self._gate(device, stream, timeout_s)
        stream.synchronize()
        return bool(self._flag[1])

    def chase(self, exec_device: int, memory_device: int, lines: int, hops: int, seed: int,
              evict_bytes: int = 0) -> float:
        np = _np()
        cp = self.cp
        rng = np.random.default_rng(seed)
        order = rng.permutation(lines).astype(np.uint32)  # one cycle through every line, in random order
        nxt = np.empty(lines, dtype=np.uint32)
        nxt[order] = np.roll(order, -1)
        # 1. Build the chain (its writes leave it in L2) and warm up (module load, TLB) well before timing.
        with cp.cuda.Device(memory_device):
            chain = cp.zeros(lines * 16, dtype=cp.uint64)
            next_dev = cp.asarray(nxt)
            self._kernel("latency", "fb_chain_init", memory_device)(
                (self._grid(memory_device),), (256,), (chain, next_dev, np.uint64(lines)))
            cp.cuda.Device(memory_device).synchronize()
        with cp.cuda.Device(exec_device):
            end_ptr = cp.zeros(1, dtype=cp.uint64)
            chase = self._kernel("latency", "fb_chase", exec_device)
            chase((1,), (1,), (np.uint64(chain.data.ptr), np.uint64(min(hops, 1000)), end_ptr))  # warm-up
            cp.cuda.Device(exec_device).synchronize()  # the timed chase must not overlap the warm-up
        # 2. Push the chain out of L2: write a scratch buffer of evict_bytes on every GPU involved.
        if evict_bytes:
            for d in dict.fromkeys((memory_device, exec_device)):
                scratch = self.alloc(d, evict_bytes)
                self.fill(scratch, seed ^ 0xE71C7)  # fill synchronizes its device
                self.free(scratch)
        # 3. The timed chase, behind a gate.
        with cp.cuda.Device(exec_device):
            stream = self._stream(exec_device, 0)
            start, end = cp.cuda.Event(), cp.cuda.Event()
            self._flag[0], self._flag[1] = 0, 0
            self._gate(exec_device, stream, GATE_TIMEOUT_S)
            start.record(stream)
            with stream:
                chase((1,), (1,), (np.uint64(chain.data.ptr), np.uint64(hops), end_ptr))
            end.record(stream)
            self._flag[0] = 1
            end.synchronize()
            seconds = cp.cuda.get_elapsed_time(start, end) / 1e3
            if int(end_ptr.get()[0]) == 0:
                raise RuntimeError("pointer chase ended on a null pointer: the chain was not built")
        return seconds / hops

    def load_kernels(self, device: int) -> list[str]:
        from fabricbench.gpu.kernels import MODULES, load_module

        names = []
        for module, (_file, kernels) in MODULES.items():
            load_module(module, device)
            names += kernels
        return names

    def versions(self) -> dict:
        out = {"cupy": self.cp.__version__}
        for key, fn in (("cuda_runtime", self.rt.runtimeGetVersion), ("cuda_driver", self.rt.driverGetVersion)):
            try:
                out[key] = int(fn())
            except Exception:
                pass
        try:
            from cupy.cuda import nvrtc

            out["nvrtc"] = ".".join(map(str, nvrtc.getVersion()))
        except Exception:
            pass
        return out

    def close(self) -> None:
        try:
            self.rt.freeHost(self._flag_ptr)
        except Exception:
            pass


def _np():
    import numpy

    return numpy


def _cuda_err(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__
