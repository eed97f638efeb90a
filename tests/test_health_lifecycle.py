"""When the lifecycle drains: k of m runs low against >= k different partners (no Slurm needed for the rule)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from fabricbench.health import lifecycle


def _pairs(run: str, low: dict[tuple[str, str], float]):
    nodes = ["a", "b", "c", "d", "e"]
    rows = []
    for x in nodes:
        for y in nodes:
            if x != y:
                rows.append({"run_id": run, "node": x, "partner": y, "value": low.get((x, y), 40e9)})
    return rows


def test_two_runs_two_partners_drain_one_partner_does_not():
    slow_c = {(x, y): 24e9 for x in "abcde" for y in "abcde" if x != y and "c" in (x, y)}
    pairs = pd.DataFrame(_pairs("r1", slow_c) + _pairs("r2", slow_c) + _pairs("r3", {}))
    conf = lifecycle.confirmations(pairs, "c", ["r3", "r2", "r1"], drop=0.25)
    assert conf.runs == ["r2", "r1"] and conf.partners == {"a", "b", "d", "e"}
    assert lifecycle.should_drain(conf, 2)
    assert not lifecycle.should_drain(lifecycle.confirmations(pairs, "c", ["r3", "r2"], drop=0.25), 2)
    # one bad partner (the c<->d cable) is not a NIC: never confirmed against >= 2 partners
    one = {("c", "d"): 20e9, ("d", "c"): 20e9}
    pairs = pd.DataFrame(_pairs("r1", one) + _pairs("r2", one))
    conf = lifecycle.confirmations(pairs, "c", ["r1", "r2"], drop=0.25)
    assert conf.runs == [] and not lifecycle.should_drain(conf, 2)


def test_reason_is_prefixed_and_bounded():
    r = lifecycle.reason(lifecycle.FABRIC_TAG, "NIC x/nic0 tx 41% below " + "y" * 400)
    assert r.startswith("fabricbench:{auto} fabric: NIC x/nic0") and len(r) <= 200


def test_run_dry_run_prints_plan_and_sweep_command(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.run([sys.executable, "-m", "fabricbench", "health", "run", "--local", "--nodes", "12", "--budget",
                           "60s", "--round-seconds", "10", "--fixed-seconds", "20", "--gpus-per-node", "8",
                           "--history", str(tmp_path / "h"), "--dry-run"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "plan: 12 nodes, rotation-4: 24 of 66 pairs in 4 rounds" in out
    assert "estimate: 60 s wall (20 s fixed + 4 x 10.0 s per round), 1.600 GPU-hours" in out
    assert "sweep pairwise" in out and "--pattern rotation" in out and "--partners 4" in out
    assert not (tmp_path / "h" / "v1" / "measurements").exists()  # nothing ran
    bad = subprocess.run([sys.executable, "-m", "fabricbench", "health", "run", "--local", "--nodes", "4", "--budget",
                          "10s", "--history", str(tmp_path / "h")], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "does not fit one round" in bad.stderr and "Traceback" not in bad.stderr


def test_per_rail_sweep_asks_for_a_rank_per_gpu(tmp_path):
    from fabricbench.health import runner
    from fabricbench.health.plan import make_plan

    nodes = ["gpu01", "gpu02", "gpu03", "gpu04"]
    plan = make_plan(nodes, 1200, 10, 20, gpus_per_node=8)
    opts = runner.RunOptions(nodes=nodes, budget_s=1200, gpus_per_node=8, per_rail=True, hca="mlx5_0,mlx5_1")
    argv = " ".join(runner._sweep_argv(opts, plan, tmp_path / "out", "fabricbench-health-x"))
    assert "--pattern circle" in argv and "--nodelist gpu01,gpu02,gpu03,gpu04" in argv
    assert "--per-rail --ntasks-per-node 8 --gpus-per-node 8 --hca mlx5_0,mlx5_1" in argv
    assert "--reservation fabricbench-health-x" in argv
    plain = " ".join(runner._sweep_argv(runner.RunOptions(nodes=nodes, budget_s=1200), plan, tmp_path / "o", None))
    assert "--per-rail" not in plain and "--reservation" not in plain
