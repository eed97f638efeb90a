"""NCCL's INFO output: the lenient parser on real logs and hand-written samples, and the capture around a run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabricbench.engine import nccl_log
from fabricbench.engine.config import RunConfig
from fabricbench.engine.ranks import RankInfo
from fabricbench.errors import RunFailed

DATA = Path(__file__).resolve().parent / "data"
P2P_SAMPLE = DATA / "nccl-info-p2p-single-node.log"
SOCKET_SAMPLE = DATA / "nccl-info-socket-fallback.log"


def _tool_outputs() -> Path | None:
    for root in (Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "tool-outputs",
                 Path("/work/shared/fixtures/tool-outputs")):
        if root.is_dir():
            return root
    return None


def _fixture(kind: str, name: str) -> str:
    root = _tool_outputs()
    path = root / kind / name if root else None
    if path is None or not path.is_file():
        pytest.skip(f"shared fixture {kind}/{name} is not present next to this checkout")
    return path.read_text(errors="replace")


H100 = "h100-2node-2rank-nccl-2.29.2-ibext-sharp-plugin-complete-orcd.txt"
B200 = "b200-2node-16rank-nccl-2.29.2-sharp-collnet-fail-orcd.txt"


# -- real logs ---------------------------------------------------------------------------------------------------
def test_h100_two_nodes_ib_plugin_with_gdr():
    text = _fixture("nccl-debug", H100)
    ranks = nccl_log.summarize_by_rank(text)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["host"] for r in ranks] == ["node1800", "node1801"]
    for r in ranks:
        assert r["nccl_version"] == "2.29.2+cuda12.9"
        assert r["network"] == "IBext_v11" and r["net_class"] == "IB"
        assert "RDMA Plugin" in r["net_plugin"] and r["net_plugin_path"].endswith("libnccl-net.so")
        assert r["collnet_plugin"].startswith("SHARP")
        assert r["ib_devices"][0] == "mlx5_0:1/IB/SHARP" and len(r["ib_devices"]) == 9
        # four channels, each a [send] and a [receive] connection to the other node, all GPUDirect RDMA
        assert r["transports"]["NET/IB/GDRDMA"] == 8 and r["transports"]["NET/Socket"] == 0
        assert r["transport"] == "NET/IB/GDRDMA" and r["gdr"] is True
        assert r["channels"] == 4 and r["nranks"] == 2 and r["nnodes"] == 2 and r["local_ranks"] == 1
        assert r["env"]["NCCL_NET_GDR_LEVEL"] == "PXB"
        assert {(p["from"], p["to"]) for p in r["peers"]} == {(0, 1), (1, 0)}
        assert nccl_log.socket_fallback(r) is None
    record = nccl_log.combine(ranks)
    assert record["transport"] == "NET/IB/GDRDMA" and record["gdr"] is True and record["channels"] == 4
    assert record["socket_fallback"] is None and record["warnings"] == []
    note = nccl_log.note_line(record)
    assert note.startswith("NCCL: 2.29.2+cuda12.9") and "network IBext_v11" in note and "NET/IB/GDRDMA" in note


def test_h100_one_ranks_lines_as_a_per_rank_file():
    text = _fixture("nccl-debug", H100)
    rank1 = "\n".join(line for line in text.splitlines() if line.startswith("node1801:"))
    s = nccl_log.summarize(rank1, rank=1)
    assert s["rank"] == 1 and s["host"] == "node1801" and s["transport"] == "NET/IB/GDRDMA"
    assert s["transports"]["NET/IB/GDRDMA"] == 8 and s["nccl_version"] == "2.29.2+cuda12.9"


def test_b200_sixteen_ranks_collnet_failure():
    text = _fixture("nccl-debug", B200)
    ranks = nccl_log.summarize_by_rank(text)
    assert [r["rank"] for r in ranks] == list(range(16))
    assert {r["host"] for r in ranks[:8]} == {"node5500"} and {r["host"] for r in ranks[8:]} == {"node5501"}
    for r in ranks:
        assert r["nccl_version"] == "2.29.2+cuda13.1"  # printed once per process, true for all its GPUs
        assert r["nranks"] == 16 and r["nnodes"] == 2 and r["local_ranks"] == 8
        assert r["channels"] == 24 and r["nvls_channels"] == 32
        assert r["network"] == "IBext_v11" and len(r["ib_devices"]) == 8
        assert r["algo"] == "CollNetChain,CollNetDirect" and r["proto"] == "Simple" and r["algo_source"] == "env"
        assert r["transports"]["COLLNET"] == 1 and r["collnet_failed"] is True
        assert "COLLNET" not in r["transport"]  # NCCL gave CollNet up: it carried nothing
    # timestamp-prefixed WARN lines are read, each attributed to the device that printed it
    assert any("Cannot initialize CollNet" in w for w in ranks[0]["warnings"])
    assert any("no algorithm/protocol available" in w for w in ranks[7]["warnings"])
    record = nccl_log.combine(ranks)
    assert record["socket_fallback"] is None and record["collnet_failed"] is True
    assert any(w.startswith("NET/IB : SHARP coll init error") and w.endswith("(ranks 0-15)")
               for w in record["warnings"])
    assert "forced by NCCL_ALGO" in nccl_log.note_line(record)


def test_nccl_tests_outputs_never_break_the_parser():
    root = _tool_outputs()
    if root is None or not (root / "nccl-tests").is_dir():
        pytest.skip("shared nccl-tests fixtures are not present next to this checkout")
    files = sorted((root / "nccl-tests").glob("*.txt"))
    assert files
    for path in files:
        text = path.read_text(errors="replace")
        s = nccl_log.summarize(text)
        nccl_log.summarize_by_rank(text)
        assert sum(s["transports"].values()) == 0 and nccl_log.socket_fallback(s) is None
        if "NCCL version 2.29.2+cuda13.1" in text:
            assert s["nccl_version"] == "2.29.2+cuda13.1"
        if "nccl-library=22809" in text:
            assert s["nccl_version"] == "2.28.9"


# -- hand-written samples ----------------------------------------------------------------------------------------
def test_single_node_p2p_only():
    ranks = nccl_log.summarize_by_rank(P2P_SAMPLE.read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["transport"] == "P2P" and r["transports"]["P2P"] == 2 and r["gdr"] is None
        assert r["channels"] == 2 and r["nnodes"] == 1 and r["network"] == "Socket" and r["net_plugin"] == "internal"
        assert r["nccl_version"] == "2.21.5+cuda12.4" and r["ib_no_device"] is True
    r0 = ranks[0]
    # TUNING lines (rank 0 only), upper-case names normalized to NCCL's own spelling, most used first
    assert r0["algo"] == "Ring,Tree" and r0["proto"] == "Simple,LL" and r0["algo_source"] == "tuning"
    ring = next(t for t in r0["tuning"] if t["op"] == "AllReduce" and t["bytes"] == 33554432)
    assert ring == {"op": "AllReduce", "bytes": 33554432, "algo": "Ring", "proto": "Simple", "channels": 2,
                    "calls": 2}
    # Socket as NCCL's network on one node is harmless: P2P carried everything
    record = nccl_log.combine(ranks, nnodes=1)
    assert record["socket_fallback"] is None and record["transport"] == "P2P"


def test_socket_fallback_per_rank_file():
    s = nccl_log.parse_file(SOCKET_SAMPLE, rank=0)
    assert s["rank"] == 0 and s["host"] == "node-a" and s["nccl_version"] == "2.18.3+cuda12.2"  # indented line
    assert s["transport"] == "NET/Socket" and s["transports"]["NET/Socket"] == 4 and s["gdr"] is False
    assert s["env"]["NCCL_IB_DISABLE"] == "1" and s["socket_devices"] == ["bond0:192.168.40.11<0>"]
    assert s["algo"] == "Ring,Tree" and s["proto"] == "Simple,LL"  # numeric ids of older versions
    assert s["warnings"] == ["Net : Connection closed by remote peer node-b<47502>"]
    warning = nccl_log.socket_fallback(s)
    assert warning and "\n" not in warning
    assert "NET/Socket" in warning and "NCCL_IB_DISABLE=1" in warning and "rank 0" in warning
    record = nccl_log.combine([s], nnodes=2)
    assert record["socket_fallback"] == warning and record["warnings"][0] == warning


def test_ib_found_but_socket_chosen():
    log = "\n".join([
        "h1:10:10 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/RoCE [1]mlx5_1:1/RoCE [RO]; OOB eth0:10.0.0.1<0>",
        "h1:10:10 [0] NCCL INFO NCCL_NET set by environment to Socket",
        "h1:10:10 [0] NCCL INFO Using network Socket",
        "h1:10:11 [0] NCCL INFO comm 0xabc rank 0 nRanks 4 nNodes 2 localRanks 2 localRank 0 MNNVL 0",
    ])
    s = nccl_log.summarize(log)
    assert s["ib_devices"] == ["mlx5_0:1/RoCE", "mlx5_1:1/RoCE"] and s["oob_interface"] == "eth0:10.0.0.1<0>"
    warning = nccl_log.socket_fallback(s)
    assert warning and "IB devices were found" in warning and "NCCL_NET=Socket" in warning


def test_transport_variants():
    log = "\n".join([
        "n:1:1 [0] NCCL INFO Channel 00 : 0[1b000] -> 1[43000] via P2P/IPC",            # old format
        "n:1:1 [0] NCCL INFO Channel 01 : 0[1b000] -> 2[52000] via direct shared memory",
        "n:1:1 [0] NCCL INFO Channel 02/0 : 0[0] -> 3[3] via SHM/direct/direct",
        "n:1:1 [0] NCCL INFO Channel 03/0 : 0[0] -> 8[0] [send] via NET/IB/3(2)/GDRDMA",  # PXN through rank 2
        "n:1:1 [0] NCCL INFO Channel 03/0 : 8[0] -> 0[0] [receive] via NET/IB/0/GDRDMA(PCI)/Shared",
        "n:1:1 [0] NCCL INFO Channel 04/0 : 0[0] -> 8[0] [send] via NET/IB/1",
        "n:1:1 [0] NCCL INFO Channel 05/0 : 0[0] -> 9[1] [send] via NET/AWS Libfabric/0/GDRDMA",
        "n:1:1 [0] NCCL INFO Channel 06/1 : 0[0] -> 1[1] via P2P/CUMEM/CE",
    ])
    s = nccl_log.summarize(log)
    t = s["transports"]
    assert (t["P2P"], t["SHM"], t["NET/IB/GDRDMA"], t["NET/IB"], t["NET/OFI/GDRDMA"]) == (2, 2, 2, 1, 1)
    assert s["transport"] == "P2P+SHM+NET/IB/GDRDMA+NET/IB+NET/OFI/GDRDMA"
    assert s["gdr"] is False  # channel 04's connection was host-staged: GDR is "used" only when all were
    assert s["channels"] == 7  # no channel count printed: the highest channel id + 1
    assert nccl_log.classify_via("NET/Socket/0") == ("NET/Socket", False)
    assert nccl_log.classify_via("COLLNET/SHARP/0/GDRDMA")[0] == "COLLNET"


def test_world_communicator_wins_over_p2p_communicators():
    log = "\n".join([
        "n:1:1 [2] NCCL INFO comm 0x1 rank 2 nRanks 4 nNodes 1 localRanks 4 localRank 2 MNNVL 0",
        "n:1:1 [2] NCCL INFO 16 coll channels, 0 collnet channels, 0 nvls channels, 16 p2p channels, "
        "2 p2p channels per peer",
        "n:1:1 [2] NCCL INFO comm 0x2 rank 0 nRanks 2 nNodes 1 localRanks 2 localRank 0 MNNVL 0",
        "n:1:1 [2] NCCL INFO comm 0x2, 24 coll channels, 0 collnet channels, 0 nvls channels, 24 p2p channels, "
        "24 p2p channels per peer",
        "n:1:1 [2] NCCL INFO Best tuning, algorithm, RING, protocol, LL128",
        "n:1:1 [2] NCCL INFO NCCL_PROTO set by environment to ^LL",
    ])
    s = nccl_log.summarize(log)
    assert (s["rank"], s["nranks"], s["channels"], s["communicators"]) == (2, 4, 16, 2)
    assert [(c["rank"], c["nranks"], c["channels"]) for c in s["comms"]] == [(2, 4, 16), (0, 2, 24)]
    assert s["algo"] == "Ring" and s["proto"] == "LL128" and s["env"]["NCCL_PROTO"] == "^LL"
    forced = nccl_log.summarize("x:1:1 [0] NCCL INFO NCCL_ALGO set by environment to ring,tree")
    assert forced["algo"] == "Ring,Tree" and forced["algo_source"] == "env"


def test_versions_and_garbage():
    assert nccl_log._version_from_code(22809) == "2.28.9"
    assert nccl_log._version_from_code(23007) == "2.30.7"
    assert nccl_log._version_from_code(2708) == "2.7.8"
    empty = nccl_log.summarize("")
    assert empty["transport"] == "" and empty["nccl_version"] is None and empty["rank"] is None
    assert nccl_log.summarize_by_rank("") == []
    assert nccl_log.socket_fallback(None) is None and nccl_log.socket_fallback({}) is None
    assert nccl_log.summarize(b"\xff\xfe NCCL INFO Using network IB\n")["network"] == "IB"
    assert nccl_log.parse_file("/nonexistent/nccl.log") is None


_FRAGMENTS = [
    "h:1:2 [0] NCCL INFO ", "[2026-01-01 00:00:00] ", "  ", "NCCL WARN ", "Channel 00/", "Channel 99 : ",
    "0[0] -> 1[1] ", "[send] ", "[receive] ", "via NET/", "via P2P/", "via SHM/", "via COLLNET/", "IB/", "Socket/",
    "0(1)/", "GDRDMA", "comm 0x1f rank ", "nRanks ", "nNodes ", "coll channels", "Bytes -> Algo ", "proto ",
    "Using network ", "NET/IB : Using [0]", "NET/Socket : Using ", "NCCL version ", "NCCL_ALGO set by environment to ",
    "Best tuning, algorithm, ", "channel{Lo..Hi}={", "..", "}", "99999999999999999999", "-1", "7", ":", "\t", "\n",
    "nccl-library=", "Loaded net plugin ", "Cannot initialize CollNet", "GPU Direct RDMA Enabled for GPU", "\x00",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=8)), max_size=60)
                 .map("".join)))
def test_random_text_never_raises(text):
    one = nccl_log.summarize(text)
    many = nccl_log.summarize_by_rank(text)
    for s in [one, *many]:
        nccl_log.socket_fallback(s)
    record = nccl_log.combine([one, *many, None])
    nccl_log.note_line(record)
    nccl_log.socket_fallback(record)
    json.dumps(record)  # what run.json will hold


# -- capture around a run ---------------------------------------------------------------------------------------
DEBUG_VARS = ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE")


def test_prepare_debug_env_sets_a_file_per_rank(tmp_path):
    env: dict[str, str] = {"PATH": "/bin"}
    path = nccl_log.prepare_debug_env(env, tmp_path / "out", 3)
    assert path == (tmp_path / "out" / "logs" / "nccl-rank3.log").absolute() and path.parent.is_dir()
    assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_DEBUG_SUBSYS"] == "INIT,NET,GRAPH,ENV"  # no TUNING: per-call lines slow small sizes
    assert env["NCCL_DEBUG_FILE"] == str(path) and env["PATH"] == "/bin"
    # NCCL expands %h/%p in the variable: a '%' in the directory is doubled so that the name stays as is
    env2: dict[str, str] = {}
    odd = nccl_log.prepare_debug_env(env2, tmp_path / "100%pure", 0)
    assert "%%" in env2["NCCL_DEBUG_FILE"] and nccl_log.expand_debug_file(env2["NCCL_DEBUG_FILE"]) == odd


def test_prepare_debug_env_respects_the_user(tmp_path):
    env = {"NCCL_DEBUG": "WARN"}
    assert nccl_log.prepare_debug_env(env, tmp_path, 0) is None and env == {"NCCL_DEBUG": "WARN"}
    env = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_FILE": str(tmp_path / "nccl.%h.%p.log")}
    path = nccl_log.prepare_debug_env(env, tmp_path, 0)
    assert path == tmp_path / f"nccl.{nccl_log._short_host()}.{os.getpid()}.log"
    assert env["NCCL_DEBUG_FILE"].endswith("nccl.%h.%p.log") and "NCCL_DEBUG_SUBSYS" not in env
    env = {}
    assert nccl_log.prepare_debug_env(env, None, 0) is None and env == {}


def _fake_run_json(out: Path) -> dict:
    record = {
        "schema_version": 1, "run_id": "r1", "status": "ok", "hosts": ["node-a", "node-b"],
        "env": None,
        "env_per_rank": [{"NCCL_DEBUG": "INFO", "NCCL_DEBUG_FILE": f"/o/logs/nccl-rank{r}.log", "MASTER_PORT": "1"}
                         for r in range(2)],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(record))
    return record


def test_merge_into_run_json(tmp_path):
    out = tmp_path / "run"
    _fake_run_json(out)
    s0 = nccl_log.parse_file(SOCKET_SAMPLE, rank=0)
    s1 = dict(s0, rank=1, host="node-b", warnings=[])
    nccl = nccl_log.merge_into_run_json(out, [s1, s0])
    saved = json.loads((out / "run.json").read_text())
    assert saved["nccl"] == json.loads(json.dumps(nccl))
    assert saved["status"] == "ok" and saved["run_id"] == "r1" and saved["schema_version"] == 1
    got = saved["nccl"]
    assert [r["rank"] for r in got["per_rank"]] == [0, 1] and got["complete"] is True and got["nnodes"] == 2
    assert got["transport"] == "NET/Socket" and got["nccl_version"] == "2.18.3+cuda12.2"
    assert got["socket_fallback"] and "ranks 0-1" in got["socket_fallback"]
    assert got["warnings"][0] == got["socket_fallback"]
    assert any("Connection closed" in w and w.endswith("(rank 0)") for w in got["warnings"])
    assert got["debug_env"]["NCCL_DEBUG_SUBSYS"] == nccl_log.DEBUG_SUBSYS
    # the per-rank NCCL_DEBUG_FILE that fabricbench set does not split run.json's env
    assert saved["env_per_rank"] is None and saved["env"]["MASTER_PORT"] == "1"


def test_merge_without_a_readable_run_json(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    nccl = nccl_log.merge_into_run_json(tmp_path, [nccl_log.parse_file(P2P_SAMPLE, rank=0)], complete=False)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["nccl"]["complete"] is False and nccl["transport"] == "P2P"


class _FakeBackend:
    def __init__(self, others):
        self.others, self.gathered, self.closed = others, [], False

    def gather_object(self, obj):
        self.gathered.append(obj)
        return [obj, *self.others]

    def close(self):
        self.closed = True


def _clean_debug_env(monkeypatch):
    for key in DEBUG_VARS:  # set then delete: monkeypatch restores the original state afterwards
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)


def _patch_worker(monkeypatch, tmp_path, rank, backend, run):
    from fabricbench.engine import worker

    out = tmp_path / "run"
    cfg = RunConfig(ops=["all_reduce"], backend="nccl", out_dir=str(out), run_id="r1")
    info = RankInfo(rank=rank, world_size=2, local_rank=rank, local_world_size=2, master_addr="127.0.0.1",
                    master_port=1, source="local", host="node-a")
    monkeypatch.setattr(worker, "discover", lambda **_: info)
    monkeypatch.setattr(worker, "resolve_backend", lambda name: "nccl")
    monkeypatch.setattr(worker, "open_backend", lambda name, ranks, timeout: backend)

    class FakeDriver:
        def __init__(self, cfg, backend, ranks):
            pass

        def run(self):
            # what NCCL would have written: this rank's INFO lines, in the file fabricbench named
            Path(os.environ["NCCL_DEBUG_FILE"]).write_text(SOCKET_SAMPLE.read_text())
            _fake_run_json(out)
            return run()

    monkeypatch.setattr(worker, "Driver", FakeDriver)
    return worker, cfg, out


def test_worker_records_nccl_in_run_json(tmp_path, monkeypatch, capsys):
    _clean_debug_env(monkeypatch)
    other = dict(nccl_log.parse_file(SOCKET_SAMPLE, rank=1), host="node-b")
    backend = _FakeBackend([other])
    worker, cfg, out = _patch_worker(monkeypatch, tmp_path, 0, backend, lambda: 0)
    assert worker.run_as_rank(cfg) == 0
    assert os.environ["NCCL_DEBUG_FILE"] == str((out / "logs" / "nccl-rank0.log").absolute())
    assert backend.closed and len(backend.gathered) == 1 and backend.gathered[0]["rank"] == 0
    saved = json.loads((out / "run.json").read_text())
    assert saved["nccl"]["transport"] == "NET/Socket" and saved["nccl"]["complete"] is True
    stdout = capsys.readouterr().out
    assert "# NCCL: 2.18.3+cuda12.2" in stdout and "# WARNING: NCCL fell back to TCP sockets" in stdout


def test_worker_gathers_after_wrong_data_but_not_after_a_crash(tmp_path, monkeypatch, capsys):
    _clean_debug_env(monkeypatch)
    backend = _FakeBackend([None])

    def wrong():
        raise RunFailed("3 wrong values")

    worker, cfg, out = _patch_worker(monkeypatch, tmp_path, 0, backend, wrong)
    with pytest.raises(RunFailed):
        worker.run_as_rank(cfg)
    assert len(backend.gathered) == 1  # every rank reached the final barrier: the gather is safe
    assert json.loads((out / "run.json").read_text())["nccl"]["complete"] is False  # rank 1 had no log

    _clean_debug_env(monkeypatch)  # the first run set NCCL_DEBUG in this process
    backend2 = _FakeBackend([None])

    def crash():
        raise RuntimeError("NCCL error: remote process exited")

    worker, cfg, out = _patch_worker(monkeypatch, tmp_path / "second", 0, backend2, crash)
    with pytest.raises(RunFailed, match="rank 0 on node-a: RuntimeError: NCCL error"):  # named, not a traceback
        worker.run_as_rank(cfg)
    assert os.environ["NCCL_DEBUG_FILE"].startswith(str((tmp_path / "second").absolute()))
    assert backend2.gathered == [] and backend2.closed  # no collective after a failure
    captured = capsys.readouterr()
    assert "NCCL WARN Net : Connection closed" in captured.err  # NCCL's file took it off the console
    assert json.loads((out / "run.json").read_text())["nccl"]["complete"] is False


def test_worker_leaves_other_backends_alone(tmp_path, monkeypatch):
    _clean_debug_env(monkeypatch)
    from fabricbench.engine import worker

    backend = _FakeBackend([])
    cfg = RunConfig(ops=["all_reduce"], backend="gloo", out_dir=str(tmp_path / "g"), run_id="g")
    info = RankInfo(0, 1, 0, 1, "127.0.0.1", 1, "single", "h")
    monkeypatch.setattr(worker, "discover", lambda **_: info)
    monkeypatch.setattr(worker, "resolve_backend", lambda name: "gloo")
    monkeypatch.setattr(worker, "open_backend", lambda name, ranks, timeout: backend)
    monkeypatch.setattr(worker, "Driver", lambda cfg, b, r: type("D", (), {"run": lambda self: 0})())
    assert worker.run_as_rank(cfg) == 0
    assert not any(k in os.environ for k in DEBUG_VARS) and backend.gathered == [] and backend.closed
    assert not (tmp_path / "g" / "logs").exists()
