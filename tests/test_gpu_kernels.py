"""The CUDA kernels compile, without a GPU: with nvcc through cuda_kernels/Makefile (sm_80 and sm_90, warnings
as errors), and through the run-time path's compiler, NVRTC, with the exact source and options that CuPy's
RawModule gets (sm_80, sm_90, sm_100 and PTX). Skipped only when the compiler itself is absent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fabricbench.gpu import kernels

REPO = Path(__file__).resolve().parents[1]
KDIR = REPO / "cuda_kernels"
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (CUDA toolkit absent)")
NVRTC = kernels.find_nvrtc()
# CI sets FABRICBENCH_REQUIRE_NVRTC=1 after installing the wheel, so that a lost NVRTC fails instead of skipping.
needs_nvrtc = pytest.mark.skipif(NVRTC is None and os.environ.get("FABRICBENCH_REQUIRE_NVRTC") != "1",
                                 reason="NVRTC not found: pip install nvidia-cuda-nvrtc")


def test_every_module_file_exists_and_defines_its_kernels():
    assert sorted(p.name for p in KDIR.glob("*.cu")) == sorted(f for f, _ in kernels.MODULES.values())
    for module, (_file, names) in kernels.MODULES.items():
        text = kernels.source(module)
        assert not re.search(r"^\s*#\s*include", text, re.M), f"{module}.cu must stay self-contained for NVRTC"
        for name in names:
            assert re.search(rf'extern "C" __global__ void(?: __launch_bounds__\(\w+\))?\s+{name}\(', text), name


@needs_nvcc
def test_makefile_check_builds_sm80_sm90_with_warnings_as_errors(tmp_path):
    proc = subprocess.run(["make", "-C", str(KDIR), "check", f"BUILD={tmp_path}", f"NVCC={NVCC}"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "-Werror all-warnings" in proc.stdout and "-Xptxas -Werror" in proc.stdout
    for module, (file, names) in kernels.MODULES.items():
        assert (tmp_path / "check" / file.replace(".cu", ".fatbin")).stat().st_size > 0
    log = proc.stdout + proc.stderr
    for arch in ("sm_80", "sm_90"):
        for names in (n for _f, n in kernels.MODULES.values()):
            for name in names:
                assert f"Compiling entry function '{name}' for '{arch}'" in log
    # the copy kernels must keep their in-flight loads in registers: no spills on either architecture
    spills = re.findall(r"Function properties for (fb_copy\w*)\n\s+\d+ bytes stack frame, (\d+) bytes spill stores",
                        log)
    assert len(spills) == 4, spills  # fb_copy and fb_copy_bidir, for sm_80 and sm_90
    assert all(n == "0" for _name, n in spills), f"the copy kernels spill registers: {spills}"


@needs_nvcc
def test_nvcc_warnings_are_errors_with_the_makefile_flags(tmp_path):
    """The flags bite: a kernel with a warning fails the same build."""
    (tmp_path / "src").mkdir()
    shutil.copy(KDIR / "Makefile", tmp_path / "src" / "Makefile")
    (tmp_path / "src" / "bad.cu").write_text('extern "C" __global__ void k(int *p) { int unused; p[0] = 1; }\n')
    proc = subprocess.run(["make", "-C", str(tmp_path / "src"), "check", f"BUILD={tmp_path}/b", f"NVCC={NVCC}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unused" in proc.stdout + proc.stderr


@needs_nvcc
def test_copy_kernel_uses_16_byte_accesses_with_eight_loads_before_the_stores(tmp_path):
    ptx = tmp_path / "copy.ptx"
    subprocess.run([NVCC, "-std=c++17", "-O3", "-arch=sm_90", "-ptx", str(KDIR / "copy.cu"), "-o", str(ptx)],
                   check=True, timeout=120)
    text = ptx.read_text()
    body = text[text.index(".entry fb_copy("):]
    body = body[:body.index("\n}")]
    ops = re.findall(r"^\s*(ld|st)\.global[.\w]*\.v4\.u32", body, re.M)
    assert ops[:16] == ["ld"] * 8 + ["st"] * 8, ops


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90", "sm_100", "compute_90"])
def test_nvrtc_compiles_every_kernel_as_the_runtime_does(arch):
    for module, (_file, names) in kernels.MODULES.items():
        out = kernels.nvrtc_compile(module, arch, NVRTC)
        if arch.startswith("compute_"):
            text = out.decode(errors="replace")
            for name in names:
                assert f".entry {name}(" in text
        else:
            assert out[:4] == b"\x7fELF", f"{module}: NVRTC did not return a CUBIN"
            for name in names:
                assert name.encode() in out


@needs_nvrtc
def test_nvrtc_warnings_are_refused_and_errors_carry_the_log():
    with pytest.raises(kernels.KernelCompileError, match="treated as errors"):
        kernels.nvrtc_compile("bad", "sm_90", NVRTC, code='extern "C" __global__ void k(int *p) { int x; p[0] = 1; }')
    with pytest.raises(kernels.KernelCompileError, match="undefined_thing"):
        kernels.nvrtc_compile("bad", "sm_90", NVRTC, code='extern "C" __global__ void k(int *p) { undefined_thing(); }')
    major, _minor = NVRTC.version()
    assert major >= 12


def test_kernel_dir_override_and_missing_sources(tmp_path, monkeypatch):
    from fabricbench.errors import UsageError

    monkeypatch.setenv(kernels.ENV_KERNEL_DIR, str(tmp_path))
    monkeypatch.setattr(kernels, "__file__", str(tmp_path / "a" / "b" / "kernels.py"))
    with pytest.raises(UsageError, match="CUDA kernel sources"):
        kernels.kernel_dir()
    for _module, (file, _names) in kernels.MODULES.items():
        shutil.copy(KDIR / file, tmp_path / file)
    assert kernels.kernel_dir() == tmp_path


@pytest.mark.parametrize("release,sm100", [("12.4", False), ("12.7", False), ("12.8", True), ("13.0", True)])
def test_makefile_builds_sm100_only_with_nvcc_12_8_or_newer(tmp_path, release, sm100):
    """A CUDA 12.0-12.7 nvcc does not know sm_100: the full build leaves it out (PTX for compute_90 instead)."""
    log = tmp_path / "nvcc.log"
    fake = tmp_path / "nvcc"
    fake.write_text("#!/bin/sh\n"
                    'if [ "$1" = "--version" ]; then echo "Cuda compilation tools, release '
                    f'{release}, V{release}.100"; exit 0; fi\n'
                    f'echo "$@" >> {log}\nfor a in "$@"; do :; done\ntouch "$a"\n')
    fake.chmod(0o755)
    proc = subprocess.run(["make", "-C", str(KDIR), f"BUILD={tmp_path}/b", f"NVCC={fake}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == len(kernels.MODULES)
    for line in lines:
        assert "code=sm_80" in line and "code=sm_90" in line
        assert ("code=sm_100" in line) is sm100
        assert ("code=compute_100" in line) is sm100
        assert ("code=compute_90" in line) is not sm100  # a PTX fallback either way


@needs_nvrtc
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_copy_kernels_load_and_store_cache_global_as_nvbandwidth(arch):
    """ld.global.cg / st.global.cg (L2 only), never the read-only path (ld.global.nc) that lets a repeated
    loop hit L1 and read high."""
    ptx = kernels.nvrtc_compile("copy", arch, NVRTC).decode(errors="replace")
    for entry in ("fb_copy", "fb_copy_bidir"):
        body = ptx[ptx.index(f".entry {entry}("):]
        body = body[:body.index("\n}")]
        loads = re.findall(r"^\s*ld\.global([.\w]*)\.v4", body, re.M)
        stores = re.findall(r"^\s*st\.global([.\w]*)\.v4", body, re.M)
        assert loads and stores, entry
        assert all(q.startswith(".cg") for q in loads), (entry, loads)
        assert all(q.startswith(".cg") for q in stores), (entry, stores)
        assert "ld.global.nc" not in body
