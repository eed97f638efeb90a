"""Collectives over subsets in `fabricbench health run` on the lab's real Slurm (issue 12, section 1): six nodes on
three leaves, leaf2's uplink degraded. The all-node all_reduce crosses every uplink and reads low against the
topology; each leaf's own all_reduce stays inside its leaf (leaf2's too) and reads normal. Nothing is drained."""

from __future__ import annotations

import json
import time

import pytest

from lab_fixture import lab, lab_config  # noqa: F401  (fixtures)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab_config():
    return {"nodes": 6, "leaves": 3, "link_rate": "400mbit"}


def test_degraded_uplink_shows_in_the_all_node_group_not_in_the_leaves(lab):
    work = lab.shared_dir / "health-coll"
    hist = work / "history"
    lab.degrade(uplink="leaf2", rate="10%")  # 80 Mbit/s for the leaf's two 400 Mbit/s hosts
    t0 = time.time()
    res = lab.fabricbench("health", "run", "--nodelist", ",".join(lab.nodes), "--budget", "3m", "--history", str(hist),
                          "--topology", str(lab.topology_yaml), "-b", "64K", "-e", "64K", "-n", "3",
                          "--collective-size", "4M", "--out", str(work / "run1"), timeout=200)
    took = time.time() - t0
    lab.heal()
    out = res.stdout
    assert res.returncode == 1, out + res.stderr  # a collective below the topology's bar is a confirmed problem
    assert "collectives: all_reduce at 4M over 4 subset(s) in 2 wave(s)" in out, out
    meta = json.loads(sorted((hist / "v1" / "runs").glob("*.json"))[-1].read_text())["collectives"]
    got = {r["component"].split(":")[-1]: r for r in meta["results"]}
    assert set(got) == {"all", "leaf1", "leaf2", "leaf3"}, meta
    assert all(r["status"] == "ok" for r in got.values()), meta
    assert got["all"]["topology_pass"] is False and got["all"]["ratio"] < 0.5, got["all"]
    for leaf in ("leaf1", "leaf2", "leaf3"):
        assert got[leaf]["topology_pass"] is True and got[leaf]["ratio"] > 0.7, got[leaf]
    states = json.loads(lab.fabricbench("health", "query", "--history", str(hist), "--format", "json",
                                        "SELECT component, metric, state FROM states WHERE component_kind = "
                                        "'collective' AND metric = 'topology_pass'").stdout)
    assert {s["component"]: s["state"] for s in states} == {
        "collective:all_reduce:all": "failed", "collective:all_reduce:leaf1": "ok",
        "collective:all_reduce:leaf2": "ok", "collective:all_reduce:leaf3": "ok"}, states
    nodes = lab.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=True).stdout
    assert "drain" not in nodes.lower(), nodes
    print(f"health run with collectives on the lab: {took:.1f} s; spent line: "
          + next((ln for ln in out.splitlines() if ln.startswith("collectives: spent")), "?") + "; "
          + ", ".join(f"{k} {r['busbw_gbps']:.4g} GB/s ({100 * r['ratio']:.0f}%)" for k, r in sorted(got.items())))
