"""`fabricbench health run --verify-tuning DIR`: after the sweep, within the budget, `tune verify` runs (here a
stand-in verify); the outcome lands in the history, the .prom file and the run's output, and the exit code
says 4 when a tuning's gain is gone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fabricbench.health import history as hist
from fabricbench.health import runner, tuning
from fabricbench.tune.stats import RatioCI
from fabricbench.tune.verify import Check


def _tuning_dir(path: Path, per_run_s: float = 2.0) -> Path:
    path.mkdir(parents=True)
    (path / "tuning.json").write_text(json.dumps({"ops": [{"op": "all_reduce", "runs": 10, "elapsed_s": 10 * per_run_s}],
                                                 "decisions": []}))
    return path


class FakeVerify:
    def __init__(self, speedup: float):
        self.speedup, self.calls = speedup, []

    def __call__(self, directory, pairs, echo):
        self.calls.append((str(directory), pairs))
        echo("verify pair 1/2 ...")
        s = self.speedup
        return [Check("all_reduce", 4194304, 1.38, RatioCI(s, s * 0.95, s * 1.05, pairs))]


def _run(tmp_path, verify, name, budget=300.0, dirs=None):
    lines: list[str] = []
    opts = runner.RunOptions(nodes=["a", "b"], budget_s=budget, history=str(tmp_path / "h"), local=True,
                             sizes=("1K", "1K"), iters=2, warmup=1, round_s=5, overhead_s=5,
                             textfile=str(tmp_path / "prom"), out=str(tmp_path / name),
                             verify_tuning=[str(d) for d in (dirs or [tmp_path / "tuned"])], verify_pairs=2,
                             verify_fn=verify, echo=lines.append)
    return runner.run(opts), lines


def test_health_run_verifies_a_tuning_records_it_and_exits_4_when_the_gain_is_gone(tmp_path):
    _tuning_dir(tmp_path / "tuned")
    held = FakeVerify(1.40)
    code, lines = _run(tmp_path, held, "r1")
    assert held.calls == [(str(tmp_path / "tuned"), 2)]
    assert code in (0, 3)  # a first run has no baseline: inconclusive (3), never 4
    assert any("claimed 1.380x, now 1.400x (95% CI 1.330-1.470, 2 pairs): holds" in ln for ln in lines)
    gone = FakeVerify(1.00)
    code, lines = _run(tmp_path, gone, "r2")
    assert code == tuning.GONE_EXIT
    assert any("GONE" in ln for ln in lines) and any(ln.startswith("exit 4:") for ln in lines)
    # history: per run a gain_holds row and the speed-up with its interval
    rows = hist.query(str(tmp_path / "h"), "SELECT run_id, component, metric, value, status FROM measurements "
                      "WHERE source = 'tuning' ORDER BY run_ts, component, metric").to_pandas()
    holds = rows[rows.metric == "gain_holds"]
    assert list(holds.value) == [1.0, 0.0] and list(holds.status) == ["held", "gone"]
    ratio = rows[rows.metric == "speedup_ratio"]
    assert list(ratio.component.unique()) == ["tuning:tuned/all_reduce/4194304"]
    assert list(ratio.value) == pytest.approx([1.40, 1.00])
    assert len(rows[rows.metric == "speedup_ci_low"]) == 2
    meta = hist.runs(str(tmp_path / "h"))[-1]
    assert meta["verify_tuning"][0]["status"] == "gone" and meta["verify_tuning"][0]["checks"][0]["ci_high"] == pytest.approx(1.05)
    # .prom: holds 0 and the three bounds of the ratio
    from prometheus_client.parser import text_string_to_metric_families

    prom = (tmp_path / "prom" / "fabricbench_health.prom").read_text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(prom)
               for s in f.samples}
    assert samples[("fabricbench_health_tuning_gain_holds", (("tuning", "tuned"),))] == 0
    key = (("bound", "ci_low"), ("op", "all_reduce"), ("size_bytes", "4194304"), ("tuning", "tuned"))
    assert samples[("fabricbench_health_tuning_speedup_ratio", key)] == pytest.approx(0.95)


def test_verify_is_skipped_when_the_budget_is_spent_and_errors_are_recorded():
    lines: list[str] = []
    never = FakeVerify(1.4)
    out = tuning.verify_tunings(["/nonexistent-tuning"], budget_left_s=5, pairs=3, echo=lines.append, verify_fn=never)
    assert out[0]["status"] == "skipped" and "needs about 60 s" in out[0]["why"] and never.calls == []

    def broken(directory, pairs, echo):
        raise RuntimeError("the defaults failed during verification (timeout)")

    out = tuning.verify_tunings(["/x"], budget_left_s=1e9, pairs=2, echo=lines.append, verify_fn=broken)
    assert out[0]["status"] == "error" and "defaults failed" in out[0]["why"]
    assert tuning.exit_code(0, out) == 3 and tuning.exit_code(1, out) == 1
    gone = [{"status": "gone", "checks": []}]
    assert tuning.exit_code(0, gone) == 4 and tuning.exit_code(3, gone) == 4 and tuning.exit_code(1, gone) == 1
    assert tuning.exit_code(0, [{"status": "held"}]) == 0


def test_estimate_uses_the_tunings_own_seconds_per_run(tmp_path):
    d = _tuning_dir(tmp_path / "t", per_run_s=3.0)
    assert tuning.estimate_s(d, 5) == pytest.approx(30.0)
    assert math.isclose(tuning.estimate_s(tmp_path / "missing", 2), 40.0)


def test_cli_refuses_a_directory_that_is_not_a_tuning(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("health", "run", "--local", "--nodes", "2", "--history", str(tmp_path / "h"),
                   "--verify-tuning", str(tmp_path), "--dry-run")
    assert proc.returncode == 2 and "not a tuning directory" in proc.stderr and "Traceback" not in proc.stderr
    d = _tuning_dir(tmp_path / "t")
    proc = run_cli("health", "run", "--local", "--nodes", "2", "--budget", "2m", "--history", str(tmp_path / "h"),
                   "--verify-tuning", str(d), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"tune verify {d} --confirm-pairs 3" in proc.stdout
