"""`fabricbench sweep pairwise --local`: local processes act as nodes, so the whole sweep machinery (plan,
one process per node for all rounds, per-pair communicators, deadlines, records, collection) runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from fabricbench.results import read_results
from fabricbench.slurm.sweep import Plan
from tests.conftest import REPO, run_cli

SMALL = ["-b", "64K", "-e", "256K", "-f", "4", "-n", "3", "-w", "1"]


def _pair_status(df) -> pd.DataFrame:
    """One row per (round, node_a, node_b) with the set of its rows' statuses."""
    rows = [(r, a, b, frozenset(str(x) for x in g["status"]))
            for (r, a, b), g in df.groupby(["round", "node_a", "node_b"])]
    return pd.DataFrame(rows, columns=["round", "node_a", "node_b", "status"])


def _sweep(tmp_path, nodes, *extra, env=None, timeout=200):
    out = tmp_path / "sweep"
    t0 = time.monotonic()
    res = run_cli("sweep", "pairwise", "--local", "--nodes", str(nodes), *SMALL, "--out", str(out), *extra,
                  env=env, timeout=timeout)
    return res, out, time.monotonic() - t0


def test_even_sweep_all_pairs_in_n_minus_1_rounds(tmp_path):
    res, out, _ = _sweep(tmp_path, 4)
    assert res.returncode == 0, res.stderr + res.stdout
    df = read_results(out)
    assert set(df["row_kind"]) == {"pair"}
    pairs = df[["round", "node_a", "node_b"]].drop_duplicates()
    assert len(pairs) == 6 and sorted(pairs["round"].unique()) == [0, 1, 2]
    assert all(len(g) == 2 for _, g in pairs.groupby("round"))  # 2 concurrent pairs per round
    got = {tuple(sorted(p)) for p in pairs[["node_a", "node_b"]].itertuples(index=False)}
    assert got == {(f"node{i}", f"node{j}") for i in range(4) for j in range(i + 1, 4)}
    # one row per (round, node_a, node_b, direction, size)
    assert len(df) == 6 * 2 * 3 and not df.duplicated(["round", "node_a", "node_b", "direction", "size_bytes"]).any()
    assert set(df["direction"]) == {"a->b", "b->a", "pingpong"}
    assert (df["status"] == "ok").all() and (df["algbw_gbps"] > 0).all()
    pp = df[df["direction"] == "pingpong"]
    assert (pp["latency_us"] > 0).all() and df[df["direction"] != "pingpong"]["latency_us"].isna().all()
    assert set(df["op"]) == {"p2p_uni", "pingpong"} and (df["nranks"] == 2).all()
    assert df["host"].notna().all() and (df["iters"] == 3).all()
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "pairwise-sweep" and info["status"] == "ok" and info["pairs"] == 6
    assert info["schema_version"] >= 1 and info["nodes"] == [f"node{i}" for i in range(4)]
    assert "6 of 6 pairs ok" in res.stdout and "a->b GB/s" in res.stdout
    # every process ran all its rounds: one start and one done record each, no per-pair process
    plan = Plan.load(out / "plan.json")
    assert plan.pair_count() == 6 and len(plan.rounds) == 3
    assert len(list((out / "records").glob("sweep-rank*.jsonl"))) == 4
    assert len(list((out / "logs").glob("rank*-node*.log"))) == 4
    # `fabricbench collect DIR` rebuilds the same table from the ranks' records
    before = read_results(out)
    (out / "results.parquet").unlink()
    again = run_cli("collect", str(out))
    assert again.returncode == 0, again.stderr
    cols = ["round", "node_a", "node_b", "direction", "size_bytes", "algbw_gbps"]
    pd.testing.assert_frame_equal(before[cols].reset_index(drop=True), read_results(out)[cols].reset_index(drop=True))


def test_odd_sweep_with_a_node_killed_mid_sweep(tmp_path):
    """5 nodes: 5 rounds of 2 pairs, one idle node per round; node2 dies at round 1 (SIGKILL). The sweep
    finishes well inside its timeout, node2's pairs from round 1 on are failed with the reason, the rest kept."""
    res, out, elapsed = _sweep(tmp_path, 5, "--pair-timeout", "20", "--connect-timeout", "3", "--timeout", "120",
                               env={"FABRICBENCH_SWEEP_INJECT": "die@node2:round=1"})
    assert res.returncode == 1, res.stderr + res.stdout
    assert elapsed < 120
    df = read_results(out)
    pairs = _pair_status(df)
    assert len(pairs) == 10 and pairs["round"].nunique() == 5
    assert all(len(g) == 2 for _, g in pairs.groupby("round"))
    dead = pairs[(pairs["node_a"] == "node2") | (pairs["node_b"] == "node2")]
    alive = pairs.drop(dead.index)
    assert all(s == {"ok"} for s in alive["status"])  # every pair without node2 kept
    before = dead[dead["round"] < 1]
    after = dead[dead["round"] >= 1]
    assert all(s == {"ok"} for s in before["status"]) and all(s == {"failed"} for s in after["status"])
    failed = df[df["status"] == "failed"]
    assert failed["error"].notna().all() and failed["error"].str.contains("node2").all()
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and info["pairs_failed"] == len(after)
    assert "killed by SIGKILL" in info["nodes_missing"]["node2"]
    assert "FAILED round" in res.stdout and "node node2" in res.stdout


def test_hung_node_is_timed_out_and_the_survivors_finish(tmp_path):
    """node1 stops (SIGSTOP) at round 1: its peers time out on it, everyone else finishes; the step deadline
    stops node1 and the sweep returns within --timeout (plus the launcher's grace)."""
    res, out, elapsed = _sweep(tmp_path, 4, "--pair-timeout", "15", "--connect-timeout", "6", "--timeout", "60",
                               env={"FABRICBENCH_SWEEP_INJECT": "hang@node1:round=1"})
    assert res.returncode == 1, res.stderr + res.stdout
    assert elapsed < 60 + 15, elapsed
    df = read_results(out)
    pairs = _pair_status(df)
    with1 = (pairs["node_a"] == "node1") | (pairs["node_b"] == "node1")
    why = res.stdout[-3000:]
    assert all(s == {"ok"} for s in pairs[~with1]["status"]), why
    assert all(s == {"failed"} for s in pairs[with1 & (pairs["round"] >= 1)]["status"]), why
    assert all(s == {"ok"} for s in pairs[with1 & (pairs["round"] == 0)]["status"]), why
    failed = df[df["status"] == "failed"]
    assert failed["error"].str.contains("node1").all(), list(failed["error"])
    # nothing is left running
    ps = subprocess.run(["pgrep", "-f", f"--plan {out}"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""


def test_slow_node_stands_out_and_random_pattern_with_retest(tmp_path):
    """A node whose sends are slow (injected delay) is low in every pair it is in; random partners with a
    retest re-measure the suspect pairs' nodes against new partners and the suspect pairs themselves 3 more
    times (an extra step, not one per pair)."""
    res, out, _ = _sweep(tmp_path, 6, "-b", "256K", "--pattern", "random", "--partners", "2", "--retest", "--seed", "3",
                         "--retest-below", "0.5", env={"FABRICBENCH_SWEEP_INJECT": "slow@node4:ms=40"})
    assert res.returncode == 0, res.stderr + res.stdout
    df = read_results(out)
    assert (df["status"] == "ok").all()
    assert set(df["phase"]) == {"sweep", "retest"}
    main = df[df["phase"] == "sweep"]
    assert main["round"].nunique() == 2 and len(main[["round", "node_a", "node_b"]].drop_duplicates()) == 6
    big = df[(df["size_bytes"] == df["size_bytes"].max()) & (df["direction"] == "a->b")]
    slow_sender = big[big["node_a"] == "node4"]["algbw_gbps"]
    others = big[(big["node_a"] != "node4") & (big["node_b"] != "node4")]["algbw_gbps"]
    if len(slow_sender):
        assert slow_sender.max() < 0.5 * others.median()
    retest = df[df["phase"] == "retest"][["round", "node_a", "node_b"]].drop_duplicates()
    assert len(retest) >= 1
    assert ((retest["node_a"] == "node4") | (retest["node_b"] == "node4")).any()
    met = {tuple(sorted(p)) for p in main[["node_a", "node_b"]].drop_duplicates().itertuples(index=False)}
    pairs = [tuple(sorted(p)) for p in retest[["node_a", "node_b"]].itertuples(index=False)]
    new = [p for p in pairs if p not in met]
    again = [p for p in pairs if p in met]
    assert any("node4" in p for p in new)  # node4 with a partner it had not met
    # --retest-rounds (default 4): each suspect pair (node4's, and any other that read low) itself 4 more times,
    # in 4 different rounds
    assert any("node4" in p for p in again)
    assert all(again.count(p) == 4 for p in set(again))
    assert all(len(set(retest[[tuple(sorted(x)) == p for x in retest[["node_a", "node_b"]].itertuples(index=False)]]
                       ["round"])) == 4 for p in set(again))
    assert "node4" in res.stdout and "LOW" in res.stdout
    # the analyzer reads which rows are the retest's (a retest confirms or clears a suspect on its own rounds)
    from fabricbench.analyze.importers import load

    pairs = load(out).pairs
    stage_rounds = pairs.groupby("stage")["round"].unique()
    assert set(stage_rounds[1]) == set(retest["round"]) and set(stage_rounds[0]) == set(main["round"])


def test_iterations_fit_the_time_target():
    from fabricbench.slurm.sweep import MIN_ITERS, iterations_for

    assert iterations_for(0.7, 2.0, 20) == 2  # 32 MiB at 400 Mbit/s: 0.7 s a message, 2 s target
    assert iterations_for(0.001, 2.0, 20) == 20  # fast: capped by -n
    assert iterations_for(5.0, 2.0, 20) == MIN_ITERS  # one message longer than the target: the minimum
    assert iterations_for(0.1, 2.0, 20, messages_per_iter=2) == 10  # ping-pong: two messages an iteration
    assert iterations_for(0.7, 0, 20) == 20  # --measure-time 0: fixed iterations
    assert iterations_for(0.7, 2.0, 1) == 1  # -n 1 is honoured


def test_slow_sender_gets_fewer_iterations_not_a_failure(tmp_path):
    """A sender 150 ms per message: its pairs take about --measure-time per measurement, the others -n."""
    env = dict(os.environ, FABRICBENCH_SWEEP_INJECT="slow@node1:ms=150")
    res, out, took = _sweep(tmp_path, 3, "-b", "64K", "-e", "64K", "-n", "10", "--measure-time", "0.6", env=env)
    assert res.returncode == 0, res.stderr + res.stdout
    df = read_results(out)
    assert (df["status"] == "ok").all()
    with_slow = df[(df["node_a"] == "node1") | (df["node_b"] == "node1")]
    others = df.drop(with_slow.index)
    assert (others["iters"] == 10).all(), others[["node_a", "node_b", "direction", "iters"]]
    # the probe round trip has one slow message of two: ~75 ms a message predicted -> 0.6 s fits 7-8 of them
    assert with_slow["iters"].between(2, 9).all(), with_slow[["node_a", "node_b", "direction", "iters"]]
    sent_by_slow = with_slow[((with_slow["direction"] == "a->b") & (with_slow["node_a"] == "node1"))
                             | ((with_slow["direction"] == "b->a") & (with_slow["node_b"] == "node1"))]
    assert (sent_by_slow["time_us"] > 140e3).all()  # the injected 150 ms per message is what was timed
    assert (sent_by_slow["time_us"] * sent_by_slow["iters"] < 1.5e6).all()  # about the target, not -n x 150 ms


def test_pair_that_times_out_late_keeps_what_it_measured(tmp_path):
    """node1 goes silent for 8 s before its first ping-pong: that measurement misses its derived deadline
    (seconds, not the 60 s pair timeout), and the pair's a->b and b->a rows measured before are kept."""
    env = dict(os.environ, FABRICBENCH_SWEEP_INJECT="stall@node1:s=8")
    res, out, took = _sweep(tmp_path, 2, "-b", "256K", "-e", "256K", env=env, timeout=120)
    assert res.returncode == 1, res.stderr + res.stdout
    df = read_results(out).set_index("direction")
    assert df.loc["a->b", "status"] == "ok" and df.loc["b->a", "status"] == "ok", df
    assert df.loc["a->b", "algbw_gbps"] > 0 and df.loc["b->a", "algbw_gbps"] > 0
    assert df.loc["pingpong", "status"] == "failed" and "ping-pong" in df.loc["pingpong", "error"], df
    assert took < 45, took  # the deadline came from what the pair measured, not --pair-timeout (60 s)
    info = json.loads((out / "run.json").read_text())
    assert info["pairs_failed"] == 1 and "1 of 1 pairs failed" in info["error"]


def test_per_rail_local_sweep(tmp_path):
    """Per-rail: rank k of each node pairs only with rank k of the other nodes."""
    res, out, _ = _sweep(tmp_path, 2, "--per-rail", "--ntasks-per-node", "2", "-b", "256K")
    assert res.returncode == 0, res.stderr + res.stdout
    df = read_results(out)
    assert sorted(df["rail"].unique()) == [0, 1]
    per_rail = df.groupby("rail")[["round", "node_a", "node_b"]].apply(lambda g: len(g.drop_duplicates()))
    assert list(per_rail) == [1, 1]  # 2 nodes: 1 round of 1 pair, on each rail, at the same time
    assert len(df) == 2 * 3 and set(df["node_a"]) == {"node0"}
    assert (df["group"] == df["rail"]).all()


def test_rank_processes_never_import_pandas(tmp_path):
    """At thousands of ranks imports from a shared filesystem are slow: a rank loads torch and the stdlib."""
    blocker = tmp_path / "block"
    for mod in ("pandas", "pyarrow", "matplotlib"):
        (blocker / mod).mkdir(parents=True)
        (blocker / mod / "__init__.py").write_text(f"raise ImportError('{mod} imported in a sweep rank')\n")
    out = tmp_path / "o"
    from fabricbench.slurm.planning import free_port_block, make_rounds

    plan = Plan(run_id="t", out_dir=str(out), nodes=["n0", "n1"], rounds=make_rounds(2, "circle", 0, 1, 0),
                sizes=[4096], iters=2, warmup=1, local=True, port_base=free_port_block(2),
                connect_timeout_s=20, pair_timeout_s=20)
    path = plan.save(out / "plan.json")
    env = dict(os.environ, PYTHONPATH=f"{blocker}:{REPO}")
    procs = [subprocess.Popen([sys.executable, "-m", "fabricbench.slurm.sweep", "--plan", str(path)],
                              env=dict(env, FABRICBENCH_SWEEP_RANK=str(r)), stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    rows = [json.loads(line) for f in (out / "records").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert sum(r["kind"] == "row" for r in rows) == 3 and sum(r["kind"] == "done" for r in rows) == 2


@pytest.mark.parametrize("args,fragment", [
    (["--local"], "--local needs --nodes N"),
    (["--local", "--nodes", "1"], "at least 2 nodes"),
    (["--local", "--nodes", "3", "--pattern", "ring"], "--pattern 'ring'"),
    (["--local", "--nodes", "3", "--backend", "mpi"], "choose gloo"),
    (["--local", "--nodes", "3", "-b", "6"], "multiples of 4"),
    (["--local", "--nodes", "3", "--pair-timeout", "0"], "--pair-timeout must be positive"),
    (["--nodes", "1", "--dry-run"], "at least 2 nodes"),
    (["--nodes", "4", "--ntasks-per-node", "4", "--dry-run"], "add --per-rail"),
])
def test_bad_sweep_options(args, fragment):
    res = run_cli("sweep", "pairwise", *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and fragment in res.stderr, res.stderr

