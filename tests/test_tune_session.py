"""The whole tuning loop (runner -> halving -> descent -> confirmation -> files -> verify) against a stand-in
for `fabricbench run` whose library is deterministic (tests/data/tune/fake_run.py): the known best algorithm
per size must be found, confirmed and written; a corrupting candidate rejected and named; a gain that goes away
makes verify fail."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fabricbench.errors import UsageError
from fabricbench.tune import ompi_rules
from fabricbench.tune.runner import RunSpec
from fabricbench.tune.session import TuneOptions, run_tune
from fabricbench.tune.verify import verify

FAKE = Path(__file__).parent / "data" / "tune" / "fake_run.py"


def _spec(**kw) -> RunSpec:
    base = dict(ops=["all_reduce"], backend="mpi", minbytes="1K", maxbytes="1M", stepfactor=64, iters=3, warmup=1,
                nprocs=4, timeout_s=60, python=str(FAKE))
    base.update(kw)
    return RunSpec(**base)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "out"
    lines: list[str] = []
    spec = _spec(inject={"allreduce=nonoverlapping": "corrupt@1"})
    opts = TuneOptions(spec=spec, out=out, budget_s=3600, confirm_pairs=2,
                       only=["allreduce=recursive_doubling", "allreduce=ring", "allreduce=nonoverlapping"])
    results = run_tune(opts, lines.append)
    return out, results, lines


def test_finds_confirms_and_writes_the_best_algorithm_per_size(tuned):
    out, results, lines = tuned
    (result,) = results
    by_size = {d.size_bytes: d for d in result.decisions}
    assert by_size[1024].choice == "allreduce=recursive_doubling" and by_size[1024].kept
    assert by_size[65536].choice == "default" and by_size[65536].verdict == "default is best"
    assert by_size[1048576].choice.startswith("allreduce=ring") and by_size[1048576].kept
    # 2x faster with 1% noise: even the widest 2-pair interval (t = 12.7) stays above 1.5
    assert by_size[1024].ci.low > 1.5 and by_size[1048576].ci.low > 1.5
    rules = ompi_rules.parse((out / "ompi-coll-rules.conf").read_text())
    assert rules == {2: {4: [ompi_rules.MsgRule(0, 3), ompi_rules.MsgRule(65536, 0), ompi_rules.MsgRule(1048576, 4)]}}
    mca = (out / "ompi-mca.env").read_text()
    assert f"OMPI_MCA_coll_tuned_dynamic_rules_filename={(out / 'ompi-coll-rules.conf').resolve()}" in mca
    assert "OMPI_MCA_coll_tuned_use_dynamic_rules=1" in mca
    assert any(line.startswith("plan: ") for line in lines) and any("estimated cost:" in ln for ln in lines)


def test_corrupting_candidate_is_rejected_and_named(tuned):
    out, results, lines = tuned
    assert results[0].ledger.rejected == {"allreduce=nonoverlapping": "wrong-data: 9 wrong values in the bit-exact check (-c 1)"}
    assert "allreduce=nonoverlapping: wrong-data" in (out / "report.md").read_text()
    assert any("allreduce=nonoverlapping" in ln and "REJECTED" in ln for ln in lines)


def test_halving_spends_fewer_runs_than_exhaustive_would(tuned):
    out, results, _ = tuned
    frame = pd.read_parquet(out / "tuning.parquet")
    search = frame[frame.phase.isin(["search", "descent"])]
    # round 0: all 4; round 1: the default and the two winners; the rejected one ran once
    assert search.groupby("candidate").run_dir.nunique().to_dict() == {
        "default": 2, "allreduce=recursive_doubling": 2, "allreduce=ring": 2, "allreduce=nonoverlapping": 1}
    assert set(frame.phase) >= {"search", "confirm"}
    assert {"candidate", "size_bytes", "time_us", "busbw_gbps", "status", "reason"} <= set(frame.columns)
    summary = json.loads((out / "tuning.json").read_text())
    assert summary["provenance"]["topology"]["hosts"] == ["node1", "node2"]
    assert summary["provenance"]["versions"]["mpi"] == "fake Open MPI"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "busbw" in html


def test_verify_holds_then_fails_when_the_gain_is_gone(tuned, monkeypatch):
    out, _, _ = tuned
    checks = verify(out, 2, lambda _line: None, {"python": str(FAKE)})
    assert [c.size_bytes for c in checks] == [1024, 1048576] and all(c.holds for c in checks)
    monkeypatch.setenv("FAKE_GAIN_GONE", "1")
    checks = verify(out, 2, lambda _line: None, {"python": str(FAKE)})
    assert not any(c.holds for c in checks)


def test_a_hanging_or_dying_candidate_is_bounded_and_recorded(tmp_path):
    import time

    from fabricbench.tune.runner import run_candidate, run_with_retry
    from fabricbench.tune.search import Candidate

    spec = _spec(timeout_s=2, grace_s=0, inject={"hangs": "hang@0", "dies": "die@1"})
    t0 = time.monotonic()
    hung = run_candidate(spec, Candidate("hangs"), tmp_path / "h", 0, "search")
    assert hung.status == "timeout" and "stopped" in hung.reason and time.monotonic() - t0 < 15
    died = run_with_retry(_spec(inject={"dies": "die@1"}), Candidate("dies"), tmp_path / "d", 0, "search")
    assert died.status == "failed" and "killed by SIGKILL" in died.reason and "twice" in died.reason
    assert died.retried.startswith("failed: exit code 1") and (tmp_path / "d-retry").is_dir()


def test_report_says_no_significant_gain_when_nothing_held():
    from fabricbench.tune.report import render_md

    summary = {"provenance": {"backend": "mpi", "topology": {"nranks": 4, "nnodes": 1, "hosts": ["h"]}, "versions": {}},
               "mode": "halving", "ops": [{"op": "all_reduce", "runs": 9, "elapsed_s": 30.0, "rejected": {}}],
               "decisions": [{"op": "all_reduce", "size_bytes": 1024, "choice": "allreduce=ring", "effective": "default",
                              "kept": False, "default_us": 10.0, "tuned_us": 9.9, "default_busbw_gbps": 0.1,
                              "tuned_busbw_gbps": 0.1, "speedup": 1.01, "ci_low": 0.97, "ci_high": 1.05, "pairs": 5,
                              "verdict": "no significant gain"}]}
    md = render_md(summary, [])
    assert "| all_reduce | 1024 | allreduce=ring | default |" in md and "1.010x (0.970-1.050, 5 pairs)" in md
    assert "No significant gain: the written configuration keeps the library's defaults." in md


def test_nccl_loop_writes_tuner_config_and_only_non_debug_knobs(tmp_path, monkeypatch):
    """NCCL through the same loop (stand-in library: tree/LL wins small sizes, NCCL_CROSS_NIC=1 saves 30%):
    algorithm/protocol go to nccl_tuner.conf for the measured nNodes/nRanks, CROSS_NIC (not debug-only) to
    nccl.env with its interval; confirmation ran the config through the plugin variables."""
    from fabricbench.tune import nccl_conf

    plugin = tmp_path / "libnccl-tuner-fabricbench.so"
    plugin.write_bytes(b"")  # the stand-in library only checks that the variable is set
    monkeypatch.setenv("FABRICBENCH_TUNER_PLUGIN", str(plugin))
    out = tmp_path / "o"
    opts = TuneOptions(spec=_spec(backend="nccl"), out=out, budget_s=3600, confirm_pairs=2, nccl_version="2.21.5",
                       only=["tree/ll", "NCCL_CROSS_NIC=1"])
    (result,) = run_tune(opts, lambda _l: None)
    by_size = {d.size_bytes: d for d in result.decisions}
    assert by_size[1024].choice.startswith("tree/ll") and by_size[1024].kept
    assert by_size[1048576].choice == "NCCL_CROSS_NIC=1" and by_size[1048576].kept
    rules = nccl_conf.parse((out / "nccl_tuner.conf").read_text())
    assert [(r.collective, r.min_bytes, r.algorithm, r.protocol, r.nnodes, r.nranks) for r in rules][0] == \
        ("allreduce", 0, "tree", "ll", 2, 4)
    env_text = (out / "nccl.env").read_text()
    assert "NCCL_CROSS_NIC=1" in env_text and "95% CI" in env_text
    assert "NCCL_ALGO" not in env_text and "NCCL_PROTO" not in env_text  # debug-only: never written
    frame = pd.read_parquet(out / "tuning.parquet")
    assert (frame.phase == "descent").any()  # channels walked inside tree/ll


def test_plan_over_budget_is_refused_and_what_was_measured_is_kept(tmp_path):
    """The budget refusal comes after the calibration run: its measurement is already in tuning.parquet."""
    opts = TuneOptions(spec=_spec(), out=tmp_path / "o", budget_s=1, confirm_pairs=2)
    with pytest.raises(UsageError, match="more than --budget"):
        run_tune(opts, lambda _line: None)
    frame = pd.read_parquet(tmp_path / "o" / "tuning.parquet")
    assert list(frame.candidate.unique()) == ["default"] and len(frame) == 3  # 3 sizes of the one run
