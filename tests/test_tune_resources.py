"""The resource stage: coordinate descent over ordered, unimodal resource knobs (AutoCCL's observation), on a
deterministic objective (finds the optimum in fewer runs than exhaustive, stops at the first non-improvement
beyond the noise, respects the budget), version gating of the NCCL resource knobs, and the stage inside the
tuning loop (stand-in library) and with the real Open MPI (segment size of coll tuned's segmented ring)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fabricbench.tune import knobs, ompi_rules
from fabricbench.tune.runner import RunSpec
from fabricbench.tune.search import unimodal_descent
from fabricbench.tune.session import TuneOptions, run_tune
from fabricbench.tune.space import build_space, nccl_space

from tests.conftest import run_cli

FAKE = Path(__file__).parent / "data" / "tune" / "fake_run.py"
AXES = {"channels": [2, 4, 8, 16, 32, 64], "buffsize": [1, 2, 4, 8, 16], "nthreads": [64, 128, 256, 512]}


def bowl(p):  # separable, unimodal along each axis; minimum at channels=16, buffsize=8, nthreads=256
    return 100 * (1 + 0.1 * (math.log2(p["channels"]) - 4) ** 2 + 0.1 * (math.log2(p["buffsize"]) - 3) ** 2
                  + 0.1 * (math.log2(p["nthreads"]) - 8) ** 2)


class Counting:
    def __init__(self, f):
        self.f, self.points = f, []

    def __call__(self, p):
        self.points.append(dict(p))
        return self.f(p)


def test_walk_finds_the_unimodal_optimum_in_fewer_runs_than_exhaustive():
    cost = Counting(bowl)
    walk = unimodal_descent({"channels": 4, "buffsize": 4, "nthreads": 512}, AXES, cost, noise=0.02)
    assert walk.point == {"channels": 16, "buffsize": 8, "nthreads": 256}
    assert walk.cost == pytest.approx(100.0)
    grid = math.prod(len(v) for v in AXES.values())  # 120 points
    one_at_a_time = sum(len(v) - 1 for v in AXES.values()) + 1  # 13: every value of each knob once
    best = min(itertools.product(*AXES.values()), key=lambda t: bowl(dict(zip(AXES, t))))
    assert dict(zip(AXES, best)) == walk.point  # what exhaustive finds
    assert walk.evaluations == len(cost.points) < one_at_a_time < grid
    assert walk.start_cost > walk.cost and not walk.stopped


def test_walk_stops_at_the_first_step_that_is_not_better_beyond_the_noise():
    # 1% differences only: inside a 2% noise band every first step is "no improvement": one step up, one
    # down per knob, then stop (2 x 3 knobs + the start = 7 runs)
    flat = Counting(lambda p: 100 * (1 + 0.01 * math.log2(p["buffsize"])))
    walk = unimodal_descent({"channels": 8, "buffsize": 4, "nthreads": 256}, AXES, flat, noise=0.02)
    assert walk.point == {"channels": 8, "buffsize": 4, "nthreads": 256} and walk.evaluations == 7
    # with no noise band the same function walks buffsize all the way down (one-sided: never tries up again)
    walk = unimodal_descent({"channels": 8, "buffsize": 4, "nthreads": 256}, AXES, flat, noise=0.0)
    assert walk.point["buffsize"] == 1
    # a step up that improves is followed in that direction only; the first worse step ends it
    line = Counting(lambda p: abs(p["x"] - 6) + 1)
    walk = unimodal_descent({"x": 2}, {"x": list(range(10))}, line, noise=0.0, passes=1)
    assert walk.point == {"x": 6} and [p["x"] for p in line.points] == [2, 3, 4, 5, 6, 7]


def test_walk_from_the_library_choice_probes_the_middle_and_never_picks_a_failed_point():
    cost = Counting(lambda p: 50.0 if p["channels"] is None else (None if p["channels"] == 32 else 100 / p["channels"]))
    walk = unimodal_descent({"channels": None}, {"channels": [2, 4, 8, 16, 32]}, cost, noise=0.02)
    assert [p["channels"] for p in cost.points] == [None, 8, 16, 32]  # probe 8 (12.5 < 50), walk up, 32 fails
    assert walk.point == {"channels": 16}
    worse = unimodal_descent({"channels": None}, {"channels": [2, 4, 8, 16, 32]}, lambda p: 10.0 if p["channels"] is None else 20.0)
    assert worse.point == {"channels": None} and worse.evaluations == 2  # the probe lost: the library's choice stays


def test_walk_respects_the_budget():
    cost = Counting(bowl)
    allowed = iter([True, True, True, False])
    walk = unimodal_descent({"channels": 4, "buffsize": 4, "nthreads": 512}, AXES, cost, noise=0.02,
                            may_continue=lambda: next(allowed, False))
    assert len(cost.points) == 4 and walk.stopped == "budget"  # the start + 3 allowed steps
    assert bowl(walk.point) == walk.cost <= walk.start_cost
    capped = unimodal_descent({"channels": 4, "buffsize": 4, "nthreads": 512}, AXES, Counting(bowl), max_evals=3)
    assert capped.evaluations == 3 and capped.stopped == "max evaluations"


def test_nccl_resource_knobs_are_gated_by_version_and_carry_their_debug_status():
    new = {a.name: a for a in knobs.nccl_resource_axes("2.21.5")}
    old = {a.name: a for a in knobs.nccl_resource_axes("2.13.4")}
    assert list(new) == ["channels", "buffsize", "nthreads", "qps", "p2p_chunk"]
    assert new["channels"].envs == ("NCCL_MIN_CTAS", "NCCL_MAX_CTAS")  # 2.17+
    assert old["channels"].envs == ("NCCL_MIN_NCHANNELS", "NCCL_MAX_NCHANNELS")  # before 2.17
    assert "p2p_chunk" not in old  # NCCL_P2P_NET_CHUNKSIZE is read from 2.14
    assert all(a.debug_only for a in new.values())  # NCCL's docs list all of them under "Debugging"
    assert new["channels"].written == "tuner-config" and new["buffsize"].written == ""
    assert new["buffsize"].default == 4 << 20 and new["buffsize"].env_for(4 << 20) == {}  # default = not set
    space = nccl_space("all_reduce", "2.16.2")
    ring = next(c for c in space.implementations if c.name == "ring/simple")
    cand = space.with_resources(ring, {"channels": 4, "buffsize": 8 << 20, "nthreads": 512})
    assert cand.name == "ring/simple,channels=4,buffsize=8388608"
    assert cand.env_dict["NCCL_MIN_NCHANNELS"] == "4" and "NCCL_MIN_CTAS" not in cand.env_dict
    assert cand.env_dict["NCCL_BUFFSIZE"] == "8388608" and "NCCL_NTHREADS" not in cand.env_dict
    assert space.with_resources(ring, space.start["ring/simple"]).name == "ring/simple"
    # Open MPI: the segment size, ordered with 0 (no segmentation = one segment as large as the message) last
    mpi = build_space("mpi", "all_reduce", 4)
    assert mpi.axes == {"allreduce=segmented_ring": {"segsize": [8192, 32768, 131072, 524288, 0]}}
    assert mpi.start["allreduce=segmented_ring"] == {"segsize": 0}


def _spec(**kw) -> RunSpec:
    base = dict(ops=["all_reduce"], backend="mpi", minbytes="1K", maxbytes="1M", stepfactor=64, iters=3, warmup=1,
                nprocs=4, timeout_s=60, python=str(FAKE))
    base.update(kw)
    return RunSpec(**base)


def test_resource_stage_in_the_loop_finds_the_segment_size_and_writes_it(tmp_path):
    """Stand-in Open MPI: segmented ring wins 1 MiB and is fastest with 32 KiB segments (unimodal in the
    segment size); the stage walks 512K -> 128K -> 32K, stops at 8K, and the rules file carries 32768."""
    lines: list[str] = []
    opts = TuneOptions(spec=_spec(), out=tmp_path / "o", budget_s=3600, confirm_pairs=2,
                       only=["allreduce=recursive_doubling", "allreduce=segmented_ring"])
    (result,) = run_tune(opts, lines.append)
    (walk,) = result.context["resource_stage"]
    assert walk["group"] == "allreduce=segmented_ring" and walk["sizes"] == [1048576]
    assert [s["value"] for s in walk["steps"]] == [524288, 131072, 32768, 8192]
    assert walk["chosen"] == "allreduce=segmented_ring,segsize=32768" and walk["runs"] == 4
    by_size = {d.size_bytes: d for d in result.decisions}
    assert by_size[1048576].choice == "allreduce=segmented_ring,segsize=32768" and by_size[1048576].kept
    rules = ompi_rules.parse((tmp_path / "o" / "ompi-coll-rules.conf").read_text())
    assert rules[2][4][-1] == ompi_rules.MsgRule(1048576, 5, 0, 32768)
    plan = next(ln for ln in lines if ln.startswith("resource stage (all_reduce)"))
    assert "coordinate descent over segsize" in plan and "runs (x" in plan
    assert "resources" in next(ln for ln in lines if ln.startswith("estimated cost:"))
    summary = json.loads((tmp_path / "o" / "tuning.json").read_text())
    assert summary["ops"][0]["resource_stage"][0]["chosen"] == walk["chosen"]
    assert "## Resource stage" in (tmp_path / "o" / "report.md").read_text()
    frame = pd.read_parquet(tmp_path / "o" / "tuning.parquet")
    assert set(frame[frame.phase == "descent"].candidate) == {f"allreduce=segmented_ring,segsize={s}" for s in
                                                              (524288, 131072, 32768, 8192)}


def test_no_resources_skips_the_stage_and_a_tight_budget_cuts_it_short(tmp_path):
    opts = TuneOptions(spec=_spec(), out=tmp_path / "a", budget_s=3600, confirm_pairs=2, resources=False,
                       only=["allreduce=recursive_doubling", "allreduce=segmented_ring"])
    (result,) = run_tune(opts, lambda _l: None)
    assert result.context["resource_stage"] == []
    assert "descent" not in set(pd.read_parquet(tmp_path / "a" / "tuning.parquet").phase)
    # budget guard: the walk may not eat the confirmation's time
    from fabricbench.tune.session import Tuner

    tuner = Tuner(TuneOptions(spec=_spec(), out=tmp_path / "b", budget_s=10), lambda _l: None)
    tuner.per_run, tuner.reserved_runs = 1.0, 8
    assert tuner.budget_allows_one_more()
    tuner.reserved_runs = 10
    assert not tuner.budget_allows_one_more()


def test_nccl_resource_stage_records_debug_only_knobs_and_never_writes_them(tmp_path, monkeypatch):
    """Stand-in NCCL: ring/ll128 wins 64 KiB; NCCL_BUFFSIZE=8 MiB is 20% faster there (debug-only: recorded,
    not written, and not part of the confirmed configuration)."""
    plugin = tmp_path / "libnccl-tuner-fabricbench.so"
    plugin.write_bytes(b"")
    monkeypatch.setenv("FABRICBENCH_TUNER_PLUGIN", str(plugin))
    out = tmp_path / "o"
    opts = TuneOptions(spec=_spec(backend="nccl"), out=out, budget_s=3600, confirm_pairs=2, nccl_version="2.21.5",
                       only=["ring/ll128"])
    (result,) = run_tune(opts, lambda _l: None)
    walk = next(w for w in result.context["resource_stage"] if w["group"] == "ring/ll128")
    assert walk["point"]["buffsize"] == 8 << 20 and walk["axes"]["buffsize"]["debug_only"] is True
    summary = json.loads((out / "tuning.json").read_text())
    assert any(x["knob"] == "buffsize" and x["env"] == {"NCCL_BUFFSIZE": str(8 << 20)}
               for x in summary["debug_only_not_written"])
    assert "NCCL_BUFFSIZE" not in (out / "nccl.env").read_text()
    assert "not written (debug-only)" in (out / "report.md").read_text()


_MISSING = [why for missing, why in (
    (shutil.which("mpirun") is None, "mpirun is not on PATH (apt-get install openmpi-bin)"),
    (importlib.util.find_spec("mpi4py") is None, "mpi4py is not installed (pip install mpi4py)"),
) if missing]


@pytest.mark.mpi
@pytest.mark.skipif(bool(_MISSING), reason="; ".join(_MISSING) or "mpi present")
def test_resource_stage_with_the_real_open_mpi_walks_the_segment_size(tmp_path):
    """Real Open MPI on 2 local ranks. The defaults are slowed on purpose (slow@0, 20 ms per call) so that
    segmented ring wins the size and the resource stage runs: every segment size it tries is a fresh
    `fabricbench run` with coll_tuned_allreduce_algorithm_segmentsize set and the bit-exact check."""
    out = tmp_path / "tuning"
    proc = run_cli("tune", "all_reduce", "--backend", "mpi", "--nprocs", "2", "-b", "256K", "-e", "256K", "-n", "3",
                   "-w", "1", "--only", "allreduce=segmented_ring", "--inject-candidate", "default=slow@0:us=20000",
                   "--confirm-pairs", "2", "--budget", "10m", "--out", str(out),
                   env={"OMPI_MCA_mpi_yield_when_idle": "1"}, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "resource stage (all_reduce): coordinate descent over segsize" in proc.stdout
    summary = json.loads((out / "tuning.json").read_text())
    (walk,) = summary["ops"][0]["resource_stage"]
    assert walk["group"] == "allreduce=segmented_ring" and walk["steps"]
    assert walk["steps"][0]["value"] == 524288  # first step down from the default (0: no segmentation)
    frame = pd.read_parquet(out / "tuning.parquet")
    descent = frame[frame.phase == "descent"]
    assert len(descent) and (descent.status == "ok").all() and (descent.nwrong == 0).all()
    first = descent.run_dir.iloc[0]
    run = json.loads((Path(first) / "run.json").read_text())
    env = run["env"] or run["env_per_rank"][0]
    assert env["OMPI_MCA_coll_tuned_allreduce_algorithm_segmentsize"] == "524288"
    d = summary["decisions"][0]
    assert d["choice"] == walk["chosen"] and d["pairs"] == 2  # the point the walk ended on, not one it passed
