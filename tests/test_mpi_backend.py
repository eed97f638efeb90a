"""The mpi4py backend: real mpirun runs end to end, and the GPU placement logic with fakes (no GPU here).

GPU buffers are exercised with a numpy-backed stand-in for CuPy on PYTHONPATH: its device arrays are plain
objects without the buffer protocol, so a host-staged run that handed one to MPI would fail; with
__cuda_array_interface__ switched on they stand in for device memory given to a CUDA-aware MPI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fabricbench.backends import mpi as mpib
from fabricbench.engine.dtypes import DTYPES, get_dtype
from fabricbench.errors import UsageError
from fabricbench.results.io import read_results

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.mpi

_MISSING = [why for missing, why in (
    (shutil.which("mpirun") is None, "mpirun is not on PATH (apt-get install openmpi-bin)"),
    (importlib.util.find_spec("mpi4py") is None, "mpi4py is not installed (pip install mpi4py)"),
) if missing]
needs_mpi = pytest.mark.skipif(bool(_MISSING), reason="; ".join(_MISSING) or "mpi present")

SMALL = ["-b", "1K", "-e", "64K", "-f", "2", "-n", "3", "-w", "1"]
# Ranks that wait spin by default; on a small, busy test machine they then steal each other's cores, and a
# run takes several times longer. These tests check data, not speed.
YIELD = {"OMPI_MCA_mpi_yield_when_idle": "1"}
COLLECTIVES = {"all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all", "sendrecv"}
P2P = {"pingpong", "p2p_uni", "p2p_bi"}


def _mpi_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "FABRICBENCH_INJECT", "FABRICBENCH_CONFIG")
           and not k.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_", "SLURM_"))}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1", **YIELD)
    env.update(extra or {})
    return env


def _mpirun(np_: int, *args: str, env: dict | None = None, timeout: float = 120):
    cmd = ["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none", sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_mpi_env(env), cwd=REPO)


def _fb(*args: str, env: dict | None = None):
    """`fabricbench ARGS` as a user runs it (the local launcher starts mpirun)."""
    return run_cli(*args, env={**YIELD, **(env or {})})


def _op_rows(out: Path):
    df = read_results(out)
    return df[df["row_kind"] == "op"]


def _assert_clean(proc, out: Path, ops: set[str], nranks: int):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = _op_rows(out)
    assert set(rows["op"]) == ops
    assert (rows["nwrong"] == 0).all()
    assert (rows["busbw_gbps"] > 0).all()
    assert (rows["backend"] == "mpi").all() and (rows["nranks"] == nranks).all()
    return rows


# -- end to end through the CLI ------------------------------------------------------------------------------
@needs_mpi
def test_local_launcher_two_ranks_all_ops_including_p2p(tmp_path):
    proc = _fb("run", "--backend", "mpi", "--nprocs", "2", *SMALL, "--out", str(tmp_path))
    rows = _assert_clean(proc, tmp_path, COLLECTIVES | P2P, 2)
    assert len(rows[rows["op"] == "all_reduce"]) == 7 * 2  # 1K..64K, out-of-place and in-place
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["status"] == "ok" and record["device"] == "cpu" and record["placement_note"] == ""
    assert record["versions"]["mpi"].startswith("Open MPI") and "\x00" not in record["versions"]["mpi"]
    assert record["versions"]["mpi_cuda_aware"] is False


@needs_mpi
def test_local_launcher_four_ranks(tmp_path):
    proc = _fb("run", "--backend", "mpi", "--nprocs", "4", *SMALL, "--out", str(tmp_path), "-q")
    rows = _assert_clean(proc, tmp_path, COLLECTIVES, 4)
    assert set(rows.loc[rows["op"] == "all_reduce", "placement"]) == {"out-of-place", "in-place"}  # as nccl-tests
    assert set(rows.loc[rows["op"] == "broadcast", "placement"]) == {"in-place"}  # MPI Bcast has one buffer


@needs_mpi
def test_in_place_on_three_ranks(tmp_path):
    # Three ranks: in-place reduce_scatter must move ranks 1 and 2's block from where MPI leaves it.
    proc = _fb("run", "--backend", "mpi", "--nprocs", "3", "--in-place", "-b", "1K", "-e", "16K", "-n", "2",
                   "-w", "1", "--out", str(tmp_path), "-q", "all_reduce", "all_gather", "reduce_scatter",
                   "reduce", "broadcast")
    rows = _assert_clean(proc, tmp_path, {"all_reduce", "all_gather", "reduce_scatter", "reduce", "broadcast"}, 3)
    assert set(rows["placement"]) == {"in-place"}


@needs_mpi
def test_split_into_groups(tmp_path):
    # MOD 2 on 4 ranks: groups {0, 2} and {1, 3}; --root 1 is a group rank (world ranks 2 and 3).
    proc = _fb("run", "--backend", "mpi", "--nprocs", "4", "--split", "MOD 2", "-r", "1", "-b", "1K", "-e",
                   "4K", "-n", "2", "-w", "1", "--out", str(tmp_path), "-q", "all_reduce", "reduce_scatter",
                   "broadcast", "reduce", "sendrecv")
    rows = _assert_clean(proc, tmp_path, {"all_reduce", "reduce_scatter", "broadcast", "reduce", "sendrecv"}, 2)
    assert set(rows["group"]) == {0, 1}
    ranks = read_results(tmp_path).query("row_kind == 'rank' and group == 1")
    assert set(ranks["rank"]) == {1, 3}


@needs_mpi
def test_under_mpirun_directly(tmp_path):
    proc = _mpirun(2, "-m", "fabricbench", "run", "--backend", "mpi", "-b", "1K", "-e", "16K", "-n", "3", "-w",
                   "1", "--out", str(tmp_path))
    _assert_clean(proc, tmp_path, COLLECTIVES | P2P, 2)
    assert json.loads((tmp_path / "run.json").read_text())["ranks"][1]["rank"] == 1


@needs_mpi
def test_corrupted_data_fails_the_run(tmp_path):
    proc = _fb("run", "--backend", "mpi", "--nprocs", "2", "-b", "1K", "-e", "2K", "-n", "2", "-w", "1",
                   "--out", str(tmp_path), "-q", "all_reduce", "sendrecv", env={"FABRICBENCH_INJECT": "corrupt@1"})
    assert proc.returncode == 1, proc.stderr
    assert "wrong values" in proc.stderr and "Traceback" not in proc.stderr
    rows = _op_rows(tmp_path)
    assert (rows["nwrong"] > 0).all()
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "wrong-data"


@needs_mpi
def test_avg_is_refused_in_one_line(tmp_path):
    proc = _fb("run", "--backend", "mpi", "--nprocs", "2", "--redop", "avg", "all_reduce", "--out",
                   str(tmp_path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fabricbench: error:") and "avg" in lines[0]
    assert not (tmp_path / "results.parquet").exists()


# -- dtypes, redops and GPU buffers: many configurations in one mpirun -----------------------------------
_DRIVER_SCRIPT = textwrap.dedent("""
    import json, sys
    from fabricbench.backends import open_backend
    from fabricbench.engine.config import RunConfig
    from fabricbench.engine.driver import Driver
    from fabricbench.engine.ranks import discover
    from fabricbench.errors import RunFailed

    ranks = discover()
    backend = open_backend("mpi", ranks, 60)
    report = []
    for c in json.loads(sys.argv[1]):
        cfg = RunConfig(backend="mpi", min_bytes=1024, max_bytes=4096, iters=2, warmup=1, quiet=True, run_id="t",
                        **c)
        driver = Driver(cfg, backend, ranks)
        try:
            driver.run()
        except RunFailed:
            pass  # rank 0 only, after the final barrier: the rows below say what was wrong
        rows = [r for r in driver.rows if r["row_kind"] == "op"]
        report.append({**c, "nwrong": sum(r["nwrong"] for r in rows), "ops": sorted({r["op"] for r in rows}),
                       "placement": sorted({r["placement"] for r in rows}), "rows": len(rows)})
    if backend.rank == 0:
        print("REPORT " + json.dumps({"device": backend.device, "note": backend.placement_note,
                                      "gpu": backend.gpu, "versions": backend.versions(), "configs": report}))
""")

_MOVERS = ["all_gather", "broadcast", "all_to_all", "sendrecv", "pingpong", "p2p_uni", "p2p_bi"]
_ALL = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all", "sendrecv",
        "pingpong", "p2p_uni", "p2p_bi"]


def _run_configs(tmp_path: Path, configs: list[dict], env: dict | None = None) -> dict:
    script = tmp_path / "drive.py"
    script.write_text(_DRIVER_SCRIPT)
    proc = _mpirun(2, str(script), json.dumps(configs), env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    for c in report["configs"]:
        assert c["nwrong"] == 0 and c["rows"] > 0, c
    return report


@needs_mpi
def test_every_dtype_and_redop_on_cpu(tmp_path):
    configs = [{"ops": ["all_reduce", "reduce_scatter", "reduce"], "dtype": d, "redop": r}
               for d in ("int8", "uint8", "int32", "uint32", "int64", "uint64", "float", "double")
               for r in ("sum", "prod", "max", "min")]
    # 16-bit floats move as uint16 bits; root 1 checks rooted ops off rank 0.
    configs += [{"ops": _MOVERS, "dtype": d} for d in ("half", "bfloat16")]
    configs += [{"ops": ["broadcast", "reduce"], "root": 1, "in_place": ip} for ip in (False, True)]
    report = _run_configs(tmp_path, configs)
    assert report["device"] == "cpu" and report["gpu"] is None


_FAKE_CUPY = textwrap.dedent('''
    """A numpy-backed stand-in for CuPy (tests only): 'device' arrays are host memory behind a plain object."""
    import os
    import numpy as np

    __version__ = "0.0-fake"
    _CAI = os.environ.get("FAKE_CUPY_CAI") == "1"  # expose __cuda_array_interface__ (a CUDA-aware MPI's view)
    uint8, uint16 = np.uint8, np.uint16


    class _Ptr:
        def __init__(self, ptr):
            self.ptr = ptr


    class ndarray:
        def __init__(self, a):
            self._a = a

        dtype = property(lambda self: self._a.dtype)
        shape = property(lambda self: self._a.shape)
        size = property(lambda self: self._a.size)
        nbytes = property(lambda self: self._a.nbytes)
        data = property(lambda self: _Ptr(self._a.__array_interface__["data"][0]))

        def __len__(self):
            return len(self._a)

        def __getitem__(self, key):
            return ndarray(self._a[key])

        def __setitem__(self, key, value):
            self._a[key] = value._a if isinstance(value, ndarray) else value

        def view(self, dtype):
            return ndarray(self._a.view(dtype))

        def fill(self, value):
            self._a.fill(value)

        def get(self, stream=None, order="C", out=None):
            if out is None:
                return self._a.copy()
            assert isinstance(out, np.ndarray) and out.shape == self._a.shape and out.dtype == self._a.dtype
            out[...] = self._a
            return out

        def set(self, arr, stream=None):
            assert isinstance(arr, np.ndarray) and arr.shape == self._a.shape and arr.dtype == self._a.dtype
            self._a[...] = arr

        if _CAI:
            @property
            def __cuda_array_interface__(self):
                return {"shape": self._a.shape, "typestr": self._a.dtype.str, "strides": None, "version": 2,
                        "data": (self._a.__array_interface__["data"][0], False)}


    def empty(count, dtype):
        return ndarray(np.empty(count, dtype))


    def asnumpy(a):
        return a.get()


    class _Stream:
        syncs = 0

        def synchronize(self):
            _Stream.syncs += 1


    class _Device:
        current = None

        def __init__(self, index):
            self.index = index

        def use(self):
            _Device.current = self.index


    class _Runtime:
        @staticmethod
        def getDeviceCount():
            return int(os.environ.get("FAKE_CUPY_GPUS", "2"))


    class cuda:
        runtime = _Runtime
        Device = _Device
        _stream = _Stream()

        @staticmethod
        def get_current_stream():
            return cuda._stream
''')


@pytest.fixture(scope="module")
def fake_cupy_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fakecupy")
    (root / "cupy").mkdir()
    (root / "cupy" / "__init__.py").write_text(_FAKE_CUPY)
    return root


@pytest.fixture
def fake_cupy(fake_cupy_dir):
    spec = importlib.util.spec_from_file_location("fake_cupy", fake_cupy_dir / "cupy" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_GPU_CONFIGS = [{"ops": _ALL}, {"ops": _ALL, "in_place": True},
                {"ops": ["all_reduce", "reduce_scatter"], "dtype": "int64", "redop": "max", "in_place": True},
                {"ops": _MOVERS, "dtype": "half"}, {"ops": ["all_gather", "broadcast"], "dtype": "bfloat16"}]


@needs_mpi
def test_gpu_buffers_host_staged_through_non_cuda_aware_mpi(tmp_path, fake_cupy_dir):
    env = {"PYTHONPATH": f"{fake_cupy_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    report = _run_configs(tmp_path, _GPU_CONFIGS, env)  # Debian's Open MPI: detected as not CUDA-aware
    assert report["device"] == "cuda" and report["note"] == "host-staged" and report["gpu"] == 0
    assert report["versions"]["mpi_cuda_aware"] is False and report["versions"]["cupy"] == "0.0-fake"
    assert report["configs"][1]["placement"] == ["in-place", "out-of-place"]  # p2p ops have no in-place


@needs_mpi
def test_gpu_buffers_handed_to_cuda_aware_mpi(tmp_path, fake_cupy_dir):
    env = {"PYTHONPATH": f"{fake_cupy_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "FAKE_CUPY_CAI": "1",
           mpib.CUDA_AWARE_ENV: "1"}
    report = _run_configs(tmp_path, _GPU_CONFIGS, env)
    assert report["device"] == "cuda" and report["note"] == "" and report["versions"]["mpi_cuda_aware"] is True


# -- unit tests: no MPI processes --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,redop,fragment", [
    ("float", "avg", "avg"), ("int32", "avg", "avg"), ("half", "sum", "half"), ("bfloat16", "max", "bfloat16"),
])
def test_unsupported_reasons_are_one_line(dtype, redop, fragment):
    why = mpib.unsupported(get_dtype(dtype), redop)
    assert why and fragment in why and "\n" not in why


def test_launcher_side_checks_do_not_start_mpi():
    # The launcher process asks `unsupported` before mpirun; importing mpi4py.MPI there would make it an MPI
    # singleton of its own.
    code = ("import sys; from fabricbench.backends import unsupported; from fabricbench.engine.dtypes import "
            "get_dtype; assert unsupported('mpi', get_dtype('half'), 'sum'); assert 'mpi4py.MPI' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_supported_combinations():
    for d in DTYPES.values():
        assert mpib.unsupported(d, None) is None  # moving any type is fine
        if not (d.kind == "float" and d.itemsize == 2):
            for r in ("sum", "prod", "max", "min"):
                assert mpib.unsupported(d, r) is None


class FakeMPI:
    """Just what the backend's setup reads from mpi4py.MPI."""

    SUM, PROD, MAX, MIN, IN_PLACE = "SUM", "PROD", "MAX", "MIN", "IN_PLACE"

    def __init__(self, library="Open MPI v4.1.4, package: Debian OpenMPI\x00", query=None, rank=0, size=2):
        self._library = library
        if query is not None:
            self.Query_cuda_support = query
        self.COMM_WORLD = SimpleNamespace(Get_rank=lambda: rank, Get_size=lambda: size)

    def Get_library_version(self):
        return self._library


def _never():
    raise AssertionError("must not be asked")


OMPI_TRUE = "mca:mpi:base:param:mpi_built_with_cuda_support:value:true\n"
OMPI_FALSE = "mca:mpi:base:param:mpi_built_with_cuda_support:value:false\n"


def test_cuda_aware_env_override_wins():
    mpi = FakeMPI(query=lambda: False)
    assert mpib.mpi_cuda_aware(mpi, {mpib.CUDA_AWARE_ENV: "1"}, _never) is True
    assert mpib.mpi_cuda_aware(FakeMPI(query=lambda: True), {mpib.CUDA_AWARE_ENV: "0"}, _never) is False
    with pytest.raises(UsageError, match=mpib.CUDA_AWARE_ENV):
        mpib.mpi_cuda_aware(mpi, {mpib.CUDA_AWARE_ENV: "maybe"}, _never)


def test_cuda_aware_from_library_query_then_ompi_info():
    assert mpib.mpi_cuda_aware(FakeMPI(query=lambda: True), {}, _never) is True
    assert mpib.mpi_cuda_aware(FakeMPI(query=lambda: False), {}, _never) is False
    # mpi4py 3.x has no Query_cuda_support: Open MPI's build flag decides.
    assert mpib.mpi_cuda_aware(FakeMPI(), {}, lambda: OMPI_TRUE) is True
    assert mpib.mpi_cuda_aware(FakeMPI(), {}, lambda: OMPI_FALSE) is False
    assert mpib.mpi_cuda_aware(FakeMPI(), {}, lambda: "") is False  # no ompi_info

    def broken():
        raise RuntimeError("MPIX_Query_cuda_support missing")

    assert mpib.mpi_cuda_aware(FakeMPI(query=broken), {}, lambda: OMPI_TRUE) is True
    # ompi_info describes Open MPI only; MPICH's answer is not in it.
    assert mpib.mpi_cuda_aware(FakeMPI(library="MPICH Version: 4.1"), {}, _never) is False


def test_plan_device():
    assert mpib.plan_device("cpu", 8, _never) == ("cpu", "")
    assert mpib.plan_device("auto", 0, _never) == ("cpu", "")  # no CuPy or no GPU: numpy buffers
    assert mpib.plan_device("auto", 1, lambda: True) == ("cuda", "")
    assert mpib.plan_device("auto", 1, lambda: False) == ("cuda", "host-staged")
    assert mpib.plan_device("cuda", 4, lambda: False) == ("cuda", "host-staged")
    with pytest.raises(UsageError, match="CuPy"):
        mpib.plan_device("cuda", 0, _never)
    with pytest.raises(UsageError, match="choose one of"):
        mpib.plan_device("tpu", 1, _never)


def _ranks(rank=1, world=2, local_rank=1):
    return SimpleNamespace(rank=rank, world_size=world, local_rank=local_rank, source="mpi-ompi")


def _backend(monkeypatch, cupy, mpi, device="auto", ranks=None):
    monkeypatch.setattr(mpib, "_load_cupy", lambda: cupy)
    monkeypatch.setattr(mpib, "_load_mpi", lambda: mpi)
    monkeypatch.delenv(mpib.CUDA_AWARE_ENV, raising=False)
    return mpib.MPIBackend(ranks or _ranks(), device=device)


def test_backend_stages_gpu_buffers_when_mpi_is_not_cuda_aware(monkeypatch, fake_cupy):
    b = _backend(monkeypatch, fake_cupy, FakeMPI(query=lambda: False, rank=1))
    assert (b.device, b.placement_note, b.gpu) == ("cuda", "host-staged", 1)  # local rank 1 of 2 GPUs
    assert fake_cupy.cuda.Device.current == 1
    buf = b.alloc(8, get_dtype("float"))
    assert isinstance(buf, mpib.Staged) and isinstance(buf.host, np.ndarray)
    part = b.view(buf, 2, 4)
    b.write(part, np.arange(4, dtype=np.float32))
    assert b.read(buf)[2:6].tolist() == [0, 1, 2, 3]  # a view shares the device buffer
    assert np.shares_memory(part.host, buf.host)  # ... and the host mirror: in-place stays in place
    b.poison(buf)
    assert (b.read(buf).view(np.uint8) == 0xA5).all()
    assert isinstance(b.timer(), mpib._SyncedTimer)


def test_backend_hands_gpu_buffers_to_cuda_aware_mpi(monkeypatch, fake_cupy):
    b = _backend(monkeypatch, fake_cupy, FakeMPI(query=lambda: True, rank=1))
    assert (b.device, b.placement_note) == ("cuda", "")
    buf = b.alloc(4, get_dtype("bfloat16"))
    assert isinstance(buf, fake_cupy.ndarray)
    assert mpib._shares(b.view(buf, 0, 2), b.view(buf, 1, 2)) and not mpib._shares(b.view(buf, 0, 2),
                                                                                  b.view(buf, 2, 2))


def test_backend_cpu_never_asks_about_cuda(monkeypatch):
    mpi = FakeMPI(query=_never, rank=1)
    b = _backend(monkeypatch, None, mpi)
    assert (b.device, b.placement_note, b.gpu) == ("cpu", "", None)
    buf = b.alloc(4, get_dtype("half"))
    assert isinstance(buf, np.ndarray) and mpib._wire(buf).dtype == np.uint16


def test_backend_refuses_rank_disagreement(monkeypatch):
    with pytest.raises(UsageError, match="mpirun"):
        _backend(monkeypatch, None, FakeMPI(rank=0, size=1), ranks=_ranks(rank=1, world=2))
