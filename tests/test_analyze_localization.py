"""Localization on seeded simulator scenarios: each fault kind named, several at once, nothing when healthy,
measured precision and recall, edge cases (single node, missing host, failed pairs, duplicates, quiet fleet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fabricbench.analyze.analysis import Thresholds, analyze
from fabricbench.analyze.importers import load
from fabricbench.analyze.simulate import Fault, SimSpec, parse_fault, simulate, write
from fabricbench.analyze.topo_adapter import fabric_from_leaves
from fabricbench.errors import UsageError
from fabricbench.results import write_results


def run(tmp_path, faults, nodes=32, leaves=4, seed=1, **kw):
    spec = SimSpec(nodes=nodes, leaves=leaves, seed=seed, faults=[parse_fault(f) for f in faults], **kw)
    out, truth = write(spec, tmp_path / f"sim{seed}")
    return analyze(load(out), fabric_from_leaves(truth["leaves"]))


def confident(res):
    return [(v.kind, v.component) for v in res.faults()]


def test_healthy_fabric_has_no_verdict(tmp_path):
    res = run(tmp_path, [], repeats=2, intermittent=0.003)
    assert confident(res) == []
    assert res.exit_code == 0


def test_nic_fault_named_both_directions(tmp_path):
    res = run(tmp_path, ["nic:node0007:0.8"])
    assert confident(res) == [("nic", "node0007")]
    v = res.faults()[0]
    assert 15 < v.deficit_pct < 25 and v.confidence >= 0.9
    assert "sends at" in v.summary and "receives at" in v.summary
    assert len(v.retest) == 3 and all(r.startswith("node0007<->") for r in v.retest)
    assert res.exit_code == 1


def test_directed_pair_fault_is_the_path_not_an_end(tmp_path):
    res = run(tmp_path, ["pair:node0003->node0004:0.7"], repeats=2)
    assert confident(res) == [("link", "node0003->node0004")]
    assert res.faults()[0].confidence >= 0.9


def test_pair_seen_in_one_round_needs_a_retest(tmp_path):
    res = run(tmp_path, ["pair:node0003->node0004:0.6"], repeats=1)
    v = [x for x in res.verdicts if x.kind == "link"]
    assert v and v[0].component == "node0003->node0004" and v[0].confidence < 0.5
    assert "retest" in v[0].summary
    # a suspect below min_confidence is listed to retest; it neither fails nor voids a judged run (issue 9)
    assert res.exit_code == 0 and res.faults() == []


def test_uplink_fault_by_tomography(tmp_path):
    res = run(tmp_path, ["uplink:leaf2:0.8"])
    assert confident(res) == [("uplink", "leaf2 uplink (leaf2-spine1)")]
    v = res.faults()[0]
    assert "tomography" in v.evidence[0]
    assert v.identifiers["switch"] == "leaf2"


def test_uplink_with_two_leaves_is_not_identifiable(tmp_path):
    spec = SimSpec(nodes=16, leaves=2, seed=1, faults=[parse_fault("uplink:leaf2:0.7")])
    out, truth = write(spec, tmp_path / "two")
    fab = fabric_from_leaves(truth["leaves"])
    res = analyze(load(out), fab)
    assert res.faults() == []  # not blamed on every host of a leaf, nor on one uplink
    assert any("two leaves" in n for n in res.notes)
    assert res.counts["inter_over_intra_leaf"] == pytest.approx(0.7 * 46 / 48, abs=0.04)
    fab.expected = {"intra-leaf": 48 * 0.97, "inter-leaf": 46 * 0.97}  # what the topology says
    res = analyze(load(out), fab)
    assert res.exit_code == 1 and res.cluster and "inter-leaf" in res.cluster[0]["summary"]
    assert all(not e["failed"] for e in res.expected if e["class"] == "intra-leaf")


def test_switch_fault_merges_its_hosts(tmp_path):
    res = run(tmp_path, ["switch:leaf3:0.7"])
    assert confident(res) == [("switch", "leaf3")]


def test_several_faults_at_once_min_not_product(tmp_path):
    res = run(tmp_path, ["nic:node0002:0.6", "nic:node0011:0.8", "uplink:leaf4:0.75",
                         "pair:node0005->node0013:0.6"], repeats=2)
    assert sorted(confident(res)) == sorted([("nic", "node0002"), ("nic", "node0011"),
                                             ("uplink", "leaf4 uplink (leaf4-spine1)"), ("link", "node0005->node0013")])
    # the pair between two bad ends is predicted by the worse end (min), so it is not a separate path verdict
    assert not any(v.kind == "link" and "node0002" in v.component and "node0011" in v.component for v in res.verdicts)
    nic = {v.component: v.deficit_pct for v in res.faults() if v.kind == "nic"}
    assert nic["node0002"] == pytest.approx(40, abs=5) and nic["node0011"] == pytest.approx(20, abs=5)


def test_gpu_and_nvlink(tmp_path):
    res = run(tmp_path, ["gpu:node0004/3:0.6", "nvlink:node0009/5"], nodes=12, leaves=3, gpus=8)
    got = {(v.kind, v.component): v for v in res.verdicts}
    assert ("gpu", "node0004:GPU3") in got and got[("gpu", "node0004:GPU3")].confidence >= 0.9
    nv = got[("nvlink", "node0009:GPU5")]
    assert nv.confidence <= 0.75 and "NVML" in nv.summary  # says which evidence it rests on
    assert nv.deficit_pct == pytest.approx(100 / 18, abs=1.0)
    assert {k for k, _ in got} <= {"gpu", "nvlink"}


def test_rails_single_nic(tmp_path):
    res = run(tmp_path, ["nic:node0006/2:0.5"], nodes=16, leaves=4, rails=4)
    got = [(v.kind, v.component) for v in res.faults()]
    assert got == [("nic", "node0006:mlx5_2")]
    assert res.rail_matrix and len(res.rail_matrix["rails"]) == 4


def test_measured_precision_recall_over_seeded_scenarios(tmp_path):
    rng = np.random.default_rng(5)
    tp = fp = fn = 0
    for seed in range(8):
        hosts = [f"node{i + 1:04d}" for i in range(48)]
        picks = rng.choice(48, 4, replace=False)
        deg = [0.15, 0.2, 0.3, 0.5][seed % 4]
        truth = {("nic", hosts[picks[0]])}
        faults = [Fault("nic", hosts[picks[0]], 1 - deg), Fault("pair", f"{hosts[picks[1]]}->{hosts[picks[2]]}", 1 - deg)]
        truth.add(("link", f"{hosts[picks[1]]}->{hosts[picks[2]]}"))
        spec = SimSpec(nodes=48, leaves=6, seed=100 + seed, faults=faults, repeats=2, intermittent=0.002)
        out, t = write(spec, tmp_path / f"p{seed}")
        res = analyze(load(out), fabric_from_leaves(t["leaves"]))
        got = {(v.kind, v.component) for v in res.faults()}
        tp += len(got & truth)
        fp += len(got - truth)
        fn += len(truth - got)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    # issue 9: a single path is named only when every measurement of it reads low and chance cannot explain
    # it (false-alarm budget): a 15% path fault seen in 2 rounds among 2,000 paths with 0.2% transient dips is
    # at that edge (14 of 16 faults found here; healthy fabrics no longer page anyone)
    assert precision >= 0.95 and recall >= 0.85, (precision, recall)


def test_quiet_fleet_spread_floor(tmp_path):
    # 0.1% noise: without the floor a 2% wobble would be 20 sigma
    spec = SimSpec(nodes=24, leaves=3, seed=3, noise=0.001, faults=[Fault("nic", "node0005", 0.98)])
    out, t = write(spec, tmp_path / "q")
    res = analyze(load(out), fabric_from_leaves(t["leaves"]))
    assert res.faults() == []
    res2 = analyze(load(out), fabric_from_leaves(t["leaves"]), thresholds=Thresholds(fleet_fraction=0.99, min_spread=0.001))
    assert [v.component for v in res2.faults()] == ["node0005"]


def test_single_node_and_empty_are_inconclusive(tmp_path):
    out = tmp_path / "one"
    write_results(out, [dict(row_kind="gpu_pair", host="solo", src_gpu=0, dst_gpu=1, kind="ce", gbps=300.0, status="ok")],
                  {"hosts": ["solo"]})
    res = analyze(load(out))
    assert res.exit_code == 3 and res.inconclusive
    empty = tmp_path / "empty"
    write_results(empty, [], {"hosts": []})
    res = analyze(load(empty))
    assert res.exit_code == 3 and "empty" in res.inconclusive[0]


def test_missing_host_and_failed_pairs_reported(tmp_path):
    frame, truth = simulate(SimSpec(nodes=12, leaves=3, seed=2))
    frame = frame[(frame["node_a"] != "node0012") & (frame["node_b"] != "node0012")].copy()
    frame["status"] = frame["status"].astype(str)
    frame["error"] = None
    hit = (frame["node_a"] == "node0003") & (frame["node_b"] == "node0004") & (frame["direction"] == "a->b")
    frame.loc[hit, "status"] = "failed"
    frame.loc[hit, "error"] = "rank 1: NCCL timeout"
    frame.loc[hit, "algbw_gbps"] = np.nan
    out = tmp_path / "m"
    write_results(out, frame, {"hosts": [f"node{i:04d}" for i in range(1, 13)]})
    res = analyze(load(out), fabric_from_leaves(truth["leaves"]))
    got = {(v.kind, v.component): v for v in res.verdicts}
    assert got[("node", "node0012")].severity == "critical" and "no measurement" in got[("node", "node0012")].summary
    # one failure with healthy ends is a retest, not a critical link verdict (issue 9, must hold 1)
    assert ("link", "node0003->node0004") not in got
    assert any("node0003->node0004" in r and "NCCL timeout" in r for r in res.retests)
    assert any("failed to measure" in c for c in res.caveats)
    # the host with no measurement is reported but never drained
    assert got[("node", "node0012")].drainable_host is None and res.drain_candidates(0.0) == []


def test_duplicate_rows_are_noted_not_double_counted(tmp_path):
    frame, truth = simulate(SimSpec(nodes=8, leaves=2, seed=4, faults=[Fault("nic", "node0002", 0.6)]))
    dup = np.concatenate([frame.to_dict("records"), frame.iloc[:50].to_dict("records")])
    out = tmp_path / "d"
    write_results(out, list(dup), {"hosts": [f"node{i:04d}" for i in range(1, 9)]})
    res = analyze(load(out), fabric_from_leaves(truth["leaves"]))
    assert any("repeated pair measurement" in n for n in res.notes)
    assert [v.component for v in res.faults()] == ["node0002"]


def test_simulator_is_seeded_and_validates(tmp_path):
    a, _ = simulate(SimSpec(nodes=6, leaves=2, seed=9))
    b, _ = simulate(SimSpec(nodes=6, leaves=2, seed=9))
    c, _ = simulate(SimSpec(nodes=6, leaves=2, seed=10))
    assert np.array_equal(a["algbw_gbps"], b["algbw_gbps"]) and not np.array_equal(a["algbw_gbps"], c["algbw_gbps"])
    assert len(a) == 6 * 5 * 2  # all ordered pairs x 2 sizes
    assert set(a["direction"].astype(str)) == {"a->b", "b->a"}
    assert a["round"].nunique() == 5  # circle method: n-1 rounds
    for bad in ("nic", "bogus:x", "nic:node1:2", "pair:node1", "gpu:node1", "nvlink:node1/0:40"):
        with pytest.raises(UsageError):
            parse_fault(bad)
    with pytest.raises(UsageError):
        simulate(SimSpec(nodes=4, leaves=2, faults=[parse_fault("nic:nodeX:0.5")]))
    k, _ = simulate(SimSpec(nodes=16, leaves=2, seed=1, pattern="random-3"))
    assert k["round"].nunique() == 3 and len(k) == 3 * 8 * 2 * 2


def test_uplink_without_topology_is_a_shared_path_not_six_nics(tmp_path):
    spec = SimSpec(nodes=24, leaves=4, seed=6, faults=[parse_fault("uplink:leaf3:0.7")])
    frame, _ = simulate(spec)
    out = tmp_path / "nt"
    write_results(out, frame, {"hosts": spec.hosts()})  # no leaf map anywhere
    res = analyze(load(out))  # no topology
    got = res.faults()
    assert [v.kind for v in got] == ["uplink"]
    assert sorted(got[0].hosts) == [f"node{i:04d}" for i in range(13, 19)]
    assert "--topology" in got[0].summary


def test_topology_adapter_reads_package_and_own_format(tmp_path):
    from fabricbench.analyze.topo_adapter import load_fabric

    lab_file = Path(__file__).resolve().parents[1] / "topologies" / "fabric-lab.yaml"  # shipped: must exist
    lab = load_fabric(str(lab_file))  # 3 leaves of 2 hosts (names belong to the lab)
    assert len(lab.leaf_of) == 6 and sorted(lab.leaves()) == ["leaf1", "leaf2", "leaf3"]
    assert sorted(list(lab.leaf_of.values()).count(x) for x in lab.leaves()) == [2, 2, 2]
    assert lab.spines == ["spine1"]
    own = tmp_path / "t.yaml"
    own.write_text("leaves: {L1: [a, b], L2: [c, d], L3: [e, f]}\nspines: [S1, S2]\nexpected_gbps: 40\n")
    fab = load_fabric(str(own))
    assert fab.path_class("a", "b") == "intra-leaf" and fab.path_class("a", "c") == "inter-leaf"
    assert fab.expected["inter-leaf"] == 40 and fab.spines == ["S1", "S2"]
    raw = tmp_path / "raw.yaml"  # the lab's YAML shape without the package's node_types
    raw.write_text("fabric: {kind: leaf_spine, node_names: 'n[1-4]', nodes_per_leaf: 2, spines: 1}\n")
    assert load_fabric(str(raw)).leaf_of == {"n1": "leaf1", "n2": "leaf1", "n3": "leaf2", "n4": "leaf2"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("hello: world\n")
    with pytest.raises(UsageError, match="leaves"):
        load_fabric(str(bad))
    bad.write_text("leaves: [1, 2\n")
    with pytest.raises(UsageError, match="YAML"):
        load_fabric(str(bad))


def test_simulate_on_the_lab_topology_finds_each_lab_fault(tmp_path):
    from fabricbench.analyze.topo_adapter import load_fabric

    lab_file = Path(__file__).resolve().parents[1] / "topologies" / "fabric-lab.yaml"  # shipped: must exist
    fab = load_fabric(str(lab_file))
    h = sorted(fab.leaf_of)
    for fault, want in ((f"nic:{h[2]}:0.5", ("nic", h[2])), (f"pair:{h[0]}->{h[4]}:0.5", ("link", f"{h[0]}->{h[4]}")),
                        ("uplink:leaf2:0.5", ("uplink", "leaf2 uplink (leaf2-spine1)"))):
        spec = SimSpec(names=list(fab.leaf_of), leaf_of=fab.leaf_of, seed=11, repeats=3, noise=0.02,
                       faults=[parse_fault(fault)])
        out, _ = write(spec, tmp_path / fault.replace(":", "_").replace(">", ""))
        res = analyze(load(out), fab)
        assert [(v.kind, v.component) for v in res.faults()] == [want], fault


def test_latency_clusterkit_rule(tmp_path):
    res = run(tmp_path, ["latency:node0009:3"], nodes=24, leaves=4)
    got = [(v.kind, v.component) for v in res.faults()]
    assert got == [("nic", "node0009")]
    assert "latency 3.0x" in res.faults()[0].summary and "2.1x" in res.faults()[0].summary
    res = run(tmp_path, ["latency:node0009:1.5"], nodes=24, leaves=4, seed=2)
    assert res.faults() == []  # below the 2.1x-the-minimum rule


def test_pingpong_only_sweep(tmp_path):
    frame, _ = simulate(SimSpec(nodes=10, leaves=2, seed=3, sizes=[8], faults=[parse_fault("latency:node0004:4")]))
    frame["direction"] = "pingpong"
    frame["algbw_gbps"] = np.nan
    frame["busbw_gbps"] = np.nan
    out = tmp_path / "pp"
    write_results(out, frame, {"hosts": [f"node{i:04d}" for i in range(1, 11)]})
    res = analyze(load(out))
    assert [(v.kind, v.component) for v in res.faults()] == [("nic", "node0004")]
    assert any("ping-pong rows" in n for n in res.notes)


def test_uplink_fault_uses_the_leaf_map_in_the_results_and_drains_nobody(tmp_path):
    """Issue 9 item 10: simulate --fault uplink, analyze without --topology: the results' leaf map names the
    uplink, and no host is a drain candidate or a failing node."""
    from fabricbench.analyze import criteria

    spec = SimSpec(nodes=16, leaves=4, seed=3, faults=[parse_fault("uplink:leaf2:0.6")])
    out, _ = write(spec, tmp_path / "u")
    res = analyze(load(out))
    assert [(v.kind, v.component) for v in res.faults()] == [("uplink", "leaf2 uplink")] or \
        [v.kind for v in res.faults()] == ["uplink"]
    assert res.drain_candidates(0.0) == []
    ev = criteria.evaluate(criteria.default(), res)
    assert not ev["cluster"]["pass"] and all(n["pass"] for n in ev["nodes"].values())
