"""Our NCCL tuner plugin (nccl_tuner/), built with make and loaded with ctypes as NCCL loads it: through the
exported ncclTunerPlugin_v2..v6 structs. A matching rule sets its algorithm/protocol cost to 0 and the channel
count; no match leaves NCCL's table and channels alone; the first matching rule wins; -1 is a wildcard."""

from __future__ import annotations

import ctypes as C
import shutil
import subprocess
from pathlib import Path

import pytest

from fabricbench.tune import nccl_conf

REPO = Path(__file__).resolve().parents[1]
NUM_ALGO, NUM_PROTO = 7, 3  # NCCL 2.23+ (2.21/2.22: 6 algorithms; the plugin uses the numAlgo it is given)
IGNORE = -1.0
TREE, RING, NVLS, PAT = 0, 1, 4, 6
LL, LL128, SIMPLE = 0, 1, 2
ALLREDUCE, ALLGATHER, BROADCAST = 4, 2, 0

Result = C.c_int
Logger = C.c_void_p
Init2 = C.CFUNCTYPE(Result, C.c_size_t, C.c_size_t, Logger, C.POINTER(C.c_void_p))
Init5 = C.CFUNCTYPE(Result, C.POINTER(C.c_void_p), C.c_uint64, C.c_size_t, C.c_size_t, Logger, C.c_void_p, C.c_void_p)
Get2 = C.CFUNCTYPE(Result, C.c_void_p, C.c_int, C.c_size_t, C.c_int, C.c_int, C.c_int, C.POINTER(C.c_int),
                   C.POINTER(C.c_int), C.POINTER(C.c_int))
Get3 = C.CFUNCTYPE(Result, C.c_void_p, C.c_int, C.c_size_t, C.c_int, C.c_void_p, C.c_int, C.c_int, C.POINTER(C.c_int))
Get4 = C.CFUNCTYPE(Result, C.c_void_p, C.c_int, C.c_size_t, C.c_int, C.c_void_p, C.c_int, C.c_int, C.c_int,
                   C.POINTER(C.c_int))
Fin = C.CFUNCTYPE(Result, C.c_void_p)


class V2(C.Structure):
    _fields_ = [("name", C.c_char_p), ("init", Init2), ("getCollInfo", Get2), ("destroy", Fin)]


class V3(C.Structure):
    _fields_ = [("name", C.c_char_p), ("init", Init2), ("getCollInfo", Get3), ("destroy", Fin)]


class V4(C.Structure):
    _fields_ = [("name", C.c_char_p), ("init", Init2), ("getCollInfo", Get4), ("destroy", Fin)]


class V5(C.Structure):
    _fields_ = [("name", C.c_char_p), ("init", Init5), ("getCollInfo", Get4), ("finalize", Fin)]


class V6(C.Structure):
    _fields_ = [("name", C.c_char_p), ("init", Init5), ("getCollInfo", Get4), ("finalize", Fin),
                ("getChunkSize", C.c_void_p)]


CONF = """# written by a test
allreduce,0,65535,tree,ll,4,2,16,-1,-1
allreduce,0,65535,ring,simple,8,-1,-1,-1,-1
allreduce,65536,18446744073709551615,nvls,simple,-1,-1,-1
allreduce,65536,18446744073709551615,ring,ll128,12,-1,-1
allgather,0,1048576,pat,simple,2,-1,16,-1,0
not,a,rule
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> C.CDLL:
    if shutil.which("make") is None or shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("make and a C compiler are needed (apt-get install make gcc)")
    build = tmp_path_factory.mktemp("tuner")
    for name in ("Makefile", "fabricbench_tuner.c", "tuner_abi.h"):
        shutil.copy(REPO / "nccl_tuner" / name, build / name)
    proc = subprocess.run(["make", "-C", str(build)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # -Wall -Wextra -Werror
    return C.CDLL(str(build / "libnccl-tuner-fabricbench.so"))


@pytest.fixture
def conf(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "nccl_tuner.conf"
    path.write_text(CONF)
    monkeypatch.setenv("NCCL_TUNER_CONFIG_FILE", str(path))
    return path


def _table(ignore=()):
    table = (C.c_float * (NUM_ALGO * NUM_PROTO))(*([10.0] * NUM_ALGO * NUM_PROTO))
    for a, p in ignore:
        table[a * NUM_PROTO + p] = IGNORE
    return table


def _v5_init(api, nranks, nnodes):
    ctx = C.c_void_p()
    assert api.init(C.byref(ctx), 1234, nranks, nnodes, None, None, None) == 0
    return ctx


def _call(api, ctx, coll, nbytes, table, reg_buff=0, channels=0):
    ch = C.c_int(channels)
    assert api.getCollInfo(ctx, coll, nbytes, 1, C.cast(table, C.c_void_p), NUM_ALGO, NUM_PROTO, reg_buff,
                           C.byref(ch)) == 0
    return ch.value


def test_every_version_symbol_is_exported(plugin):
    for version, struct in ((2, V2), (3, V3), (4, V4), (5, V5), (6, V6)):
        api = struct.in_dll(plugin, f"ncclTunerPlugin_v{version}")
        assert api.name == b"fabricbench"
    assert V6.in_dll(plugin, "ncclTunerPlugin_v6").getChunkSize is None  # optional: NCCL keeps its chunk size


def test_matching_rule_zeroes_its_cost_and_sets_channels(plugin, conf):
    api = V5.in_dll(plugin, "ncclTunerPlugin_v5")
    ctx = _v5_init(api, 16, 2)
    table = _table()
    assert _call(api, ctx, ALLREDUCE, 4096, table) == 4  # first rule: exact nNodes=2, nRanks=16
    assert table[TREE * NUM_PROTO + LL] == 0.0
    assert sum(1 for x in table if x == 0.0) == 1 and table[RING * NUM_PROTO + SIMPLE] == 10.0  # first match only
    assert api.finalize(ctx) == 0


def test_wildcards_and_ruled_out_entries(plugin, conf):
    api = V6.in_dll(plugin, "ncclTunerPlugin_v6")
    ctx = _v5_init(api, 8, 1)  # rule 1 needs 2 nodes / 16 ranks: the wildcard rule 2 applies
    table = _table()
    assert _call(api, ctx, ALLREDUCE, 100, table) == 8 and table[RING * NUM_PROTO + SIMPLE] == 0.0
    # large: NVLS is ruled out by NCCL (-1), so the next matching rule (ring/LL128, 12 channels) applies
    table = _table(ignore=[(NVLS, SIMPLE)])
    assert _call(api, ctx, ALLREDUCE, 1 << 30, table) == 12
    assert table[RING * NUM_PROTO + LL128] == 0.0 and table[NVLS * NUM_PROTO + SIMPLE] == IGNORE
    # channels -1 keeps NCCL's count
    table = _table()
    assert _call(api, ctx, ALLREDUCE, 1 << 20, table, channels=0) == 0 and table[NVLS * NUM_PROTO + SIMPLE] == 0.0
    api.finalize(ctx)


def test_unmatched_calls_leave_the_table_alone(plugin, conf):
    api = V4.in_dll(plugin, "ncclTunerPlugin_v4")
    ctx = C.c_void_p()
    assert api.init(8, 1, None, C.byref(ctx)) == 0
    for coll, nbytes, reg in ((BROADCAST, 100, 0), (ALLGATHER, 100, 0), (ALLGATHER, 2 << 20, 0)):
        table = _table()
        assert _call(api, ctx, coll, nbytes, table, reg_buff=reg, channels=0) == 0
        assert list(table) == [10.0] * (NUM_ALGO * NUM_PROTO)  # allgather rule needs 16 ranks
    api.destroy(ctx)


def test_v3_and_v2_entry_points(plugin, conf):
    v3 = V3.in_dll(plugin, "ncclTunerPlugin_v3")
    ctx = C.c_void_p()
    assert v3.init(16, 2, None, C.byref(ctx)) == 0
    table, ch = _table(), C.c_int(0)
    assert v3.getCollInfo(ctx, ALLREDUCE, 10, 1, C.cast(table, C.c_void_p), NUM_ALGO, NUM_PROTO, C.byref(ch)) == 0
    assert ch.value == 4 and table[TREE * NUM_PROTO + LL] == 0.0
    v3.destroy(ctx)
    v2 = V2.in_dll(plugin, "ncclTunerPlugin_v2")
    assert v2.init(8, 1, None, C.byref(ctx)) == 0
    algo, proto, ch = C.c_int(-1), C.c_int(-1), C.c_int(0)
    # large allreduce: nvls rule skipped without NVLS support, ring/LL128 next
    assert v2.getCollInfo(ctx, ALLREDUCE, 1 << 30, 0, 0, 1, C.byref(algo), C.byref(proto), C.byref(ch)) == 0
    assert (algo.value, proto.value, ch.value) == (RING, LL128, 12)
    assert v2.getCollInfo(ctx, ALLREDUCE, 1 << 30, 0, 1, 1, C.byref(algo), C.byref(proto), C.byref(ch)) == 0
    assert (algo.value, proto.value) == (NVLS, SIMPLE)
    v2.destroy(ctx)


def test_plugin_and_python_reader_agree(plugin, conf):
    """The Python reader (used to write and check configs) picks the same rule as the C plugin."""
    rules = nccl_conf.parse(CONF)
    api = V5.in_dll(plugin, "ncclTunerPlugin_v5")
    names = {0: "tree", 1: "ring", 4: "nvls", 6: "pat"}
    protos = {0: "ll", 1: "ll128", 2: "simple"}
    for nranks, nnodes in ((16, 2), (8, 1), (16, 1)):
        ctx = _v5_init(api, nranks, nnodes)
        for coll, cname in ((ALLREDUCE, "allreduce"), (ALLGATHER, "allgather")):
            for nbytes in (0, 65535, 65536, 1 << 20, (1 << 20) + 1, 1 << 40):
                table = _table()
                _call(api, ctx, coll, nbytes, table)
                zero = [i for i, x in enumerate(table) if x == 0.0]
                rule = nccl_conf.first_match(rules, cname, nbytes, nnodes, nranks, 1, 0)
                if rule is None:
                    assert zero == []
                else:
                    assert [(names[i // NUM_PROTO], protos[i % NUM_PROTO]) for i in zero] == [(rule.algorithm, rule.protocol)]
        api.finalize(ctx)


def test_missing_config_changes_nothing(plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("NCCL_TUNER_CONFIG_FILE", str(tmp_path / "absent.conf"))
    api = V5.in_dll(plugin, "ncclTunerPlugin_v5")
    ctx = _v5_init(api, 8, 1)
    table = _table()
    assert _call(api, ctx, ALLREDUCE, 100, table) == 0 and list(table) == [10.0] * 21
    api.finalize(ctx)
