"""The CUDA kernels' sources, their compile options, and the two ways they are compiled.

- At run time (what users run): CuPy's `RawModule` compiles each `cuda_kernels/*.cu` with NVRTC for the GPU it
  runs on, once per (module, device) in this process; CuPy also keeps the compiled binary in its on-disk
  cache (~/.cupy/kernel_cache), so later runs do not compile again. See `load_module`.
- Without a GPU (CI): `nvrtc_compile` calls the same NVRTC library through ctypes, with the same source and
  options, for a named architecture; no GPU or driver is needed. NVRTC has no -Werror, so any warning in its
  log is turned into an error here. `cuda_kernels/Makefile` builds the same files with nvcc (sm_80, sm_90,
  sm_100 and a PTX fallback, warnings as errors).

The kernel files are self-contained (no #include) so that NVRTC needs no toolkit headers.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fabricbench.errors import UsageError

# module name -> (file, kernels it defines)
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "copy": ("copy.cu", ("fb_copy", "fb_copy_bidir")),
    "gate": ("gate.cu", ("fb_gate",)),
    "latency": ("latency.cu", ("fb_chain_init", "fb_chase")),
    "pattern": ("pattern.cu", ("fb_fill", "fb_verify", "fb_corrupt")),
}
# The options given to NVRTC on both paths (CuPy adds the architecture of the GPU it runs on).
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++17",)
# What CuPy 13/14's RawModule adds to them by itself; the GPU-free check adds the same, to compile what CuPy does.
CUPY_ADDED_OPTIONS: tuple[str, ...] = ("-ftz=true", "--device-as-default-execution-space")
COPY_THREADS = 512  # FB_THREADS in copy.cu: threads per block of the copy kernels
ENV_KERNEL_DIR = "FABRICBENCH_CUDA_KERNELS"
ENV_NVRTC = "FABRICBENCH_NVRTC"


class KernelCompileError(RuntimeError):
    """A kernel did not compile (or compiled with warnings); the message holds the compiler's log."""


def kernel_dir() -> Path:
    """Where the .cu files are: $FABRICBENCH_CUDA_KERNELS, else `cuda_kernels/` of this checkout."""
    override = os.environ.get(ENV_KERNEL_DIR)
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[2] / "cuda_kernels")
    for path in candidates:
        if (path / MODULES["copy"][0]).is_file():
            return path
    raise UsageError(f"the CUDA kernel sources (cuda_kernels/*.cu) are not found at {candidates[0]}; run from a "
                     f"fabricbench checkout or set {ENV_KERNEL_DIR} to the folder that holds them")


def source(module: str) -> str:
    if module not in MODULES:
        raise KeyError(f"unknown kernel module {module!r}; known: {', '.join(MODULES)}")
    return (kernel_dir() / MODULES[module][0]).read_text()


# -- the run-time path: CuPy RawModule, compiled once per (module, device) -------------------------------------
_LOADED: dict[tuple[str, int], object] = {}


def load_module(module: str, device: int):
    """The CuPy RawModule for `module` on `device`, compiled on first use and kept for the process."""
    key = (module, device)
    if key not in _LOADED:
        import cupy

        with cupy.cuda.Device(device):
            try:
                mod = cupy.RawModule(code=source(module), options=NVRTC_OPTIONS, backend="nvrtc")
                for name in MODULES[module][1]:
                    mod.get_function(name)  # compiles now, so a compile error surfaces here, with its log
            except (RuntimeError, OSError) as err:
                # CuPy without its CUDA components (NVRTC, headers) on a node with only the driver raises
                # RuntimeError ("CuPy failed to load libnvrtc.so..."): one line with the fix, not a traceback.
                # A kernel's own compile error (CompileException, with its log) is not a RuntimeError.
                raise UsageError(_cupy_failure(err, device)) from None
        _LOADED[key] = mod
    return _LOADED[key]


def _cupy_failure(err: BaseException, device: int) -> str:
    from fabricbench.gpu.api import cupy_fix_hint

    text = " ".join(str(err).split())[:300] or type(err).__name__
    driver = None
    try:
        import cupy

        driver = int(cupy.cuda.runtime.driverGetVersion())
    except Exception:  # noqa: BLE001 - the hint falls back to CUDA 13
        pass
    return f"CuPy cannot compile fabricbench's kernels for GPU {device} ({text}); {cupy_fix_hint(driver)}"


def get_kernel(module: str, name: str, device: int):
    import cupy

    with cupy.cuda.Device(device):
        return load_module(module, device).get_function(name)


# -- the GPU-free path: NVRTC through ctypes -----------------------------------------------------------------
def _nvrtc_candidates() -> list[str]:
    found: list[str] = []
    override = os.environ.get(ENV_NVRTC)
    if override:
        found.append(override)
    # pip wheels: nvidia-cuda-nvrtc (CUDA 13: nvidia/cu13/lib) and nvidia-cuda-nvrtc-cu12 (nvidia/cuda_nvrtc/lib)
    for base in {*sys.path, *(p for p in [os.environ.get("VIRTUAL_ENV")] if p)}:
        for sub in ("nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "nvidia/cu12/lib"):
            found += sorted(glob.glob(os.path.join(base, sub, "libnvrtc.so*")))
    # a CUDA toolkit
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            for lib in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
                found += sorted(glob.glob(os.path.join(home, lib, "libnvrtc.so*")))
    found += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]  # the loader's own search path
    return [f for f in found if "builtins" not in os.path.basename(f) and ".alt." not in os.path.basename(f)]


@dataclass
class Nvrtc:
    lib: ctypes.CDLL
    path: str

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        return major.value, minor.value


def find_nvrtc() -> Nvrtc | None:
    """The NVRTC library (pip wheel, CUDA toolkit or the loader's path), or None when there is none."""
    for candidate in _nvrtc_candidates():
        folder = os.path.dirname(candidate)
        if folder:  # NVRTC dlopens its builtins library by name: load it first from the same folder
            for builtins in sorted(glob.glob(os.path.join(folder, "libnvrtc-builtins.so*"))):
                if ".alt." in builtins:
                    continue
                try:
                    ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    pass
        try:
            lib = ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return Nvrtc(lib, candidate)
    return None


def nvrtc_compile(module: str, arch: str, nvrtc: Nvrtc | None = None, werror: bool = True,
                  code: str | None = None) -> bytes:
    """Compile one kernel module with NVRTC for `arch` (e.g. 'sm_90', or 'compute_90' for PTX); return the
    CUBIN (or PTX). Raises KernelCompileError with the log on errors, and on warnings when `werror`."""
    nvrtc = nvrtc or find_nvrtc()
    if nvrtc is None:
        raise KernelCompileError("NVRTC (libnvrtc.so) not found: pip install nvidia-cuda-nvrtc, or set "
                                 f"{ENV_NVRTC} to its path")
    lib = nvrtc.lib
    text = (code if code is not None else source(module)).encode()
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), text, f"{module}.cu".encode(), 0, None, None),
           "nvrtcCreateProgram")
    try:
        opts = [*NVRTC_OPTIONS, *CUPY_ADDED_OPTIONS, f"--gpu-architecture={arch}"]
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log_buf = ctypes.create_string_buffer(max(size.value, 1))
        lib.nvrtcGetProgramLog(prog, log_buf)
        log = log_buf.value.decode(errors="replace").strip()
        if rc != 0:
            raise KernelCompileError(f"{module}.cu for {arch}: {lib.nvrtcGetErrorString(rc).decode()}\n{log}")
        if werror and "warning" in log.lower():
            raise KernelCompileError(f"{module}.cu for {arch}: warnings (treated as errors)\n{log}")
        ptx = arch.startswith("compute_")
        get_size, get = ((lib.nvrtcGetPTXSize, lib.nvrtcGetPTX) if ptx
                         else (lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN))
        out_size = ctypes.c_size_t()
        _check(lib, get_size(prog, ctypes.byref(out_size)), "nvrtcGet*Size")
        out = ctypes.create_string_buffer(out_size.value)
        _check(lib, get(prog, out), "nvrtcGet*")
        return out.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _check(lib, rc: int, what: str) -> None:
    if rc != 0:
        raise KernelCompileError(f"{what} failed: {lib.nvrtcGetErrorString(rc).decode()}")
