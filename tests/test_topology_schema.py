"""Topology files: the schema, the shipped files, and every kind of bad file (one line naming file and field)."""

from __future__ import annotations

import math

import pytest
import yaml

from fabricbench.errors import UsageError
from fabricbench.topology.lab import lab_topology
from fabricbench.topology.load import dump_topology, list_topologies, load_text, load_topology
from fabricbench.topology.rates import format_rate, parse_rate, pcie_rate
from tests.test_topology_helpers import DATA, REPO

SHIPPED = ["dgx-h100", "hgx-h200", "dgx-a100", "dgx-b200", "gb200-nvl72", "pcie-8gpu", "cpu-node", "fabric-lab"]


@pytest.mark.parametrize("text,gbytes", [
    ("400 Gb/s", 50.0), ("400Gbit/s", 50.0), ("400gbit", 50.0), ("25 GB/s", 25.0), ("400 Mbit/s", 0.05),
    ("400mbit", 0.05), ("200 Mb/s", 0.025), ("1.6 Tb/s", 200.0), ("1e3 Mbit", 0.125), ("900 GB/s", 900.0),
])
def test_rates_parse_with_units(text, gbytes):
    assert parse_rate(text) == pytest.approx(gbytes)
    assert parse_rate(format_rate(parse_rate(text))) == pytest.approx(gbytes)


@pytest.mark.parametrize("value,fragment", [
    (400, "has no unit"), ("400", "has no unit"), ("0 Gb/s", "positive"), ("-5 Gb/s", "not a rate"),
    ("400 Gbps", "ambiguous"), ("50 mbps", "ambiguous"), ("fast", "not a rate"), ("400 Xb/s", "unknown unit"),
    (True, "has no unit"), ("1e999 Gb/s", "positive and finite"),
])
def test_rates_refused(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_rate(value)


def test_pcie_rates_match_the_specs():
    assert pcie_rate(5, 16) == pytest.approx(63.0, rel=0.01)  # PCIe 5 x16: 32 GT/s, 128b/130b
    assert pcie_rate(4, 16) == pytest.approx(31.5, rel=0.01)
    assert pcie_rate(3, 8) == pytest.approx(7.88, rel=0.01)


def test_every_required_topology_is_shipped_and_valid():
    known = list_topologies()
    for name in SHIPPED:
        assert name in known, f"{name}.yaml missing from topologies/"
        topo = load_topology(name)
        assert topo.name == name
        assert topo.sources or name == "fabric-lab"


def test_shipped_facts():
    h100 = load_topology("dgx-h100").node_type
    assert h100.gpus.count == 8 and h100.nvlink.links_per_gpu == 18 and h100.nvlink.topology == "nvswitch"
    assert h100.nvlink_per_gpu() == pytest.approx(450.0)
    assert all(nic.rate == pytest.approx(50.0) for nic in h100.nics)
    assert {g for sw in h100.pcie_switches for g in sw.gpus} == set(range(8))
    nvl72 = load_topology("gb200-nvl72")
    assert nvl72.node_type.nvlink.domain_hosts == 18
    assert nvl72.node_type.gpus.count * nvl72.node_type.nvlink.domain_hosts == 72
    assert load_topology("pcie-8gpu").node_type.nvlink is None
    assert load_topology("cpu-node").node_type.gpus.count == 0
    lab = load_topology("fabric-lab")
    assert lab.fabric.kind == "leaf_spine" and lab.fabric.leaves == 3 and len(lab.host_names()) == 6


def test_shipped_lab_file_is_what_the_generator_writes():
    assert (REPO / "topologies" / "fabric-lab.yaml").read_text() == dump_topology(lab_topology())


def test_dump_and_load_round_trip():
    for name in SHIPPED:
        topo = load_topology(name)
        again = load_text(dump_topology(topo), "round-trip")
        assert again == topo


def _base() -> dict:
    return yaml.safe_load((REPO / "topologies" / "dgx-h100.yaml").read_text())


def _error(data: dict | str) -> str:
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    with pytest.raises(UsageError) as info:
        load_text(text, "t.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("t.yaml: ")
    return message


def test_malformed_yaml_names_line():
    msg = _error("name: x\nnode_types: {a: [1, 2\n")
    assert "not valid YAML at line" in msg


def test_not_a_mapping():
    assert "a YAML mapping" in _error("- just\n- a list\n")


def test_unknown_key_lists_allowed_keys():
    data = _base()
    data["node_types"]["dgx-h100"]["nvlink"]["speed"] = "25 GB/s"
    msg = _error(data)
    assert "node_types.dgx-h100.nvlink.speed: unknown key" in msg
    assert "link_rate" in msg and "links_per_gpu" in msg
    data = _base()
    data["fabrik"] = {}
    assert "fabrik: unknown key; allowed: schema_version, name" in _error(data)


@pytest.mark.parametrize("rate,fragment", [("0 Gb/s", "positive"), ("-400 Gb/s", "not a rate"), (400, "no unit")])
def test_zero_negative_unitless_rates(rate, fragment):
    data = _base()
    data["node_types"]["dgx-h100"]["nics"][0]["rate"] = rate
    msg = _error(data)
    assert "node_types.dgx-h100.nics.0.rate" in msg and fragment in msg


def test_literal_fields_name_what_is_allowed():
    data = _base()
    data["node_types"]["dgx-h100"]["nvlink"]["topology"] = "mesh"
    assert "'nvswitch' or 'direct'" in _error(data)
    data = _base()
    data["fabric"]["kind"] = "dragonfly"
    assert "fabric.kind" in _error(data) and "rail_optimized" in _error(data)


def test_oversubscription_must_be_positive():
    data = _base()
    data["fabric"]["oversubscription"] = 0
    assert "fabric.oversubscription" in _error(data)


def test_rail_naming_a_missing_nic():
    msg = _error((DATA / "topology-bad-rail.yaml").read_text())
    assert "rail 'rail2' names NIC 'mlx5_9'" in msg and "mlx5_0, mlx5_1" in msg


def test_cycle_where_a_tree_is_required():
    msg = _error((DATA / "topology-bad-cycle.yaml").read_text())
    assert "cycle" in msg and "a tree is required" in msg


def test_references_inside_a_node_type():
    data = _base()
    data["node_types"]["dgx-h100"]["nics"][0]["gpus"] = [9]
    assert "serves GPU 9, which does not exist" in _error(data)
    data = _base()
    data["node_types"]["dgx-h100"]["pcie_switches"][0]["nics"] = ["mlx5_99"]
    assert "lists NIC 'mlx5_99'" in _error(data)
    data = _base()
    del data["node_types"]["dgx-h100"]["cpu_interconnect"]
    assert "needs cpu_interconnect" in _error(data)
    data = _base()
    data["fabric"]["node_type"] = "dgx-h200"
    assert "fabric.node_type 'dgx-h200' is not among node_types" in _error(data)
    data = _base()
    data["node_types"]["dgx-h100"]["nics"].append(dict(data["node_types"]["dgx-h100"]["nics"][0]))
    assert "used twice" in _error(data)


def test_direct_nvlink_needs_valid_connections():
    data = _base()
    nvl = data["node_types"]["dgx-h100"]["nvlink"]
    nvl["topology"] = "direct"
    assert "needs nvlink.connections" in _error(data)
    nvl["connections"] = [[0, 0, 4]]
    assert "two different indexes" in _error(data)
    nvl["connections"] = [[0, 1, 12], [0, 2, 12]]
    assert "more than links_per_gpu=18" in _error(data)


def test_nvlink_domain_must_be_filled():
    data = yaml.safe_load((REPO / "topologies" / "gb200-nvl72.yaml").read_text())
    data["fabric"]["node_names"] = "gb[001-020]"
    assert "do not fill whole NVLink domains of 18 hosts" in _error(data)


def test_host_count_consistency():
    data = _base()
    data["fabric"]["nodes"] = 5
    assert "fabric.nodes is 5 but node_names has 32 hosts" in _error(data)


def test_load_file_errors(tmp_path):
    with pytest.raises(UsageError, match="no such topology file"):
        load_topology(str(tmp_path / "missing.yaml"))
    with pytest.raises(UsageError, match="neither a file nor a shipped topology; known: cpu-node"):
        load_topology("dgx-h900")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="bin.yaml"):
        load_topology(str(bad))


def test_lab_generator_rates_and_oversubscription():
    lab = lab_topology(leaves=4, nodes_per_leaf=3, link_rate="200mbit", uplink_rate="300mbit")
    assert len(lab.host_names()) == 12 and lab.host_names()[0] == "lab1"
    assert lab.node_type.nics[0].rate == pytest.approx(0.025)
    assert lab.fabric.oversubscription == pytest.approx(2.0)
    with pytest.raises(UsageError, match="--link-rate"):
        lab_topology(link_rate="fast")
    assert math.isclose(lab_topology().fabric.oversubscription, 1.0)  # uplinks unshaped by default (docs/lab.md)
    unshaped = lab_topology(link_rate="none")
    assert unshaped.node_type.nics[0].rate == pytest.approx(9 / 8) and "unshaped" in unshaped.description


def test_huge_hostlists_are_refused_before_expanding():
    data = _base()
    data["fabric"]["node_names"] = "dgx[1-999999999]"
    assert "names more than 20000 hosts" in _error(data)
    from fabricbench.topology.discover.slurm_topology import parse

    with pytest.raises(UsageError, match="more than 200000 hosts"):
        parse("SwitchName=s0 Nodes=n[1-999999999]\n")


def test_fields_that_do_not_fit_the_fabric_kind():
    data = yaml.safe_load((REPO / "topologies" / "cpu-node.yaml").read_text())
    data["fabric"]["spines"] = 2
    assert "fabric.spines is for kind leaf_spine or rail_optimized, not single_switch" in _error(data)
    tree = yaml.safe_load((DATA / "topology-bad-cycle.yaml").read_text())
    tree["fabric"]["switches"][2]["switches"] = []
    load_text(yaml.safe_dump(tree), "ok.yaml")  # without the cycle it is valid
    tree["fabric"]["nodes"] = 3
    assert "takes its hosts from switches[].nodes" in _error(tree)
