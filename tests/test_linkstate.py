"""fabricbench.linkstate: ibstat / ibstatus / ibv_devinfo text and sysfs trees to Port records."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabricbench.errors import UsageError
from fabricbench.linkstate import (Port, looks_like_link_state, normalize_phys_state, normalize_state, parse_text,
                                   read_ports)

DATA = Path(__file__).parent / "data" / "linkstate"


def by_name(ports: list[Port]) -> dict[str, Port]:
    return {(f"{p.host}/" if p.host else "") + p.name: p for p in ports}


def test_states_in_every_spelling():
    for text in ("4: ACTIVE", "Active", "PORT_ACTIVE (4)", "4", "ACTIVE"):
        assert normalize_state(text) == "ACTIVE", text
    assert normalize_state("1: DOWN") == normalize_state("PORT_DOWN (1)") == normalize_state("Down") == "DOWN"
    assert normalize_state("Initializing") == normalize_state("2: INIT") == "INIT"
    assert normalize_state("3: ARMED") == "ARMED"
    for text in ("5: LinkUp", "LINK_UP (5)", "LinkUp", "5"):
        assert normalize_phys_state(text) == "LinkUp", text
    assert normalize_phys_state("2: Polling") == normalize_phys_state("POLLING (2)") == "Polling"
    assert normalize_phys_state("3: Disabled") == normalize_phys_state("DISABLED (3)") == "Disabled"


def test_ibstat_lexical_order_mixed_link_layers():
    ports = read_ports(DATA / "ibstat-mixed-eth-ib-lexical.txt")
    assert [p.name for p in ports] == ["mlx5_0:1", "mlx5_1:1", "mlx5_2:1", "mlx5_10:1"]  # number order
    p = by_name(ports)
    assert p["mlx5_0:1"].link_layer == "Ethernet" and p["mlx5_0:1"].rate_gbps == 200.0 and p["mlx5_0:1"].active
    assert p["mlx5_0:1"].guid == "0x5aa2e1fffedae626" and p["mlx5_0:1"].source == "ibstat"
    assert p["mlx5_10:1"].state == "DOWN" and p["mlx5_10:1"].physical_state == "Disabled"
    assert p["mlx5_2:1"].link_layer == "InfiniBand" and p["mlx5_2:1"].lid == 17 and p["mlx5_2:1"].rate_gbps == 100


def test_ibstat_ibwarn_lines_and_two_ports():
    p = by_name(read_ports(DATA / "ibstat-mlx4-dual-port-ibwarn.txt"))
    assert set(p) == {"mlx4_0:1", "mlx4_0:2"}
    assert (p["mlx4_0:1"].state, p["mlx4_0:1"].physical_state, p["mlx4_0:1"].lid) == ("DOWN", "Disabled", 38)
    assert (p["mlx4_0:2"].state, p["mlx4_0:2"].rate_gbps, p["mlx4_0:2"].lid) == ("ACTIVE", 56.0, 39)


def test_ibstatus_numeric_states_hex_lid_and_width():
    ports = read_ports(DATA / "ibstatus-4x-edr.txt")
    assert len(ports) == 4 and all(p.active and p.link_up and p.rate_gbps == 100.0 for p in ports)
    p = by_name(ports)
    assert p["mlx5_0:1"].lid == 0xF and p["mlx5_3:1"].lid == 0x11 and p["mlx5_0:1"].width == "4X"
    assert p["mlx5_0:1"].guid == "0x506b4b0300f5ce9c" and p["mlx5_0:1"].source == "ibstatus"
    q = by_name(read_ports(DATA / "ibstatus-fdr10-polling.txt"))
    assert (q["mlx4_0:2"].state, q["mlx4_0:2"].physical_state, q["mlx4_0:2"].lid) == ("DOWN", "Polling", 0)
    assert q["mlx4_0:1"].rate_gbps == 40.0


def test_ibv_devinfo_plain_and_verbose():
    p = by_name(read_ports(DATA / "ibv_devinfo-mlx4.txt"))
    assert p["mlx4_1:1"].state == "ACTIVE" and p["mlx4_1:1"].lid == 22 and p["mlx4_1:1"].rate_gbps is None
    assert p["mlx4_1:1"].physical_state == "" and p["mlx4_1:1"].link_up  # no phys_state without -v
    assert p["mlx4_1:2"].state == "DOWN" and not p["mlx4_1:2"].link_up
    assert p["mlx4_1:1"].guid == "0x7cfe900300a595c0"
    v = by_name(read_ports(DATA / "ibv_devinfo-v-excerpt.txt"))
    assert v["mlx5_0:1"].rate_gbps == 200.0 and v["mlx5_0:1"].width == "4X"  # 4 lanes x 50 Gb/s (HDR)
    assert v["mlx5_0:1"].physical_state == "LinkUp" and v["mlx5_0:1"].source == "ibv_devinfo"
    assert v["mlx5_bond_0:1"].rate_gbps == 100.0 and v["mlx5_bond_0:1"].link_layer == "Ethernet"


def test_pdsh_prefixed_interleaved_hosts():
    p = by_name(read_ports(DATA / "pdsh-ibstatus-two-hosts.txt"))
    assert set(p) == {"cn001/mlx5_0:1", "cn001/mlx5_1:1", "cn002/mlx5_0:1", "cn002/mlx5_1:1"}
    assert p["cn002/mlx5_1:1"].rate_gbps == 200.0 and p["cn001/mlx5_1:1"].rate_gbps == 400.0
    assert p["cn002/mlx5_1:1"].lid == 0x21


def test_tabs_spaces_and_crlf_are_equivalent():
    text = (DATA / "ibstat-mlx4-dual-port-ibwarn.txt").read_text()
    assert parse_text(text.replace("\t", "    ").replace("\n", "\r\n")) == parse_text(text)


def _port(root: Path, dev: str, n: int, state: str, phys: str, rate: str, layer: str, lid: str = "0x0"):
    d = root / "sys/class/infiniband" / dev / "ports" / str(n)
    d.mkdir(parents=True)
    for name, value in (("state", state), ("phys_state", phys), ("rate", rate), ("link_layer", layer),
                        ("lid", lid)):
        (d / name).write_text(value + "\n")
    (d / "gids").mkdir()
    (d / "gids" / "0").write_text("fe80:0000:0000:0000:a088:c203:0000:%04x\n" % n)


def test_sysfs_tree(tmp_path):
    _port(tmp_path, "mlx5_10", 1, "4: ACTIVE", "5: LinkUp", "400 Gb/sec (4X NDR)", "InfiniBand", "0x1a")
    _port(tmp_path, "mlx5_2", 1, "1: DOWN", "3: Disabled", "10 Gb/sec (4X SDR)", "InfiniBand")
    _port(tmp_path, "mlx5_3", 1, "4: ACTIVE", "5: LinkUp", "100 Gb/sec (2X HDR)", "Ethernet")
    ports = read_ports(tmp_path, host="gpu07")
    assert [p.name for p in ports] == ["mlx5_2:1", "mlx5_3:1", "mlx5_10:1"]
    p = by_name(ports)
    assert p["gpu07/mlx5_10:1"].rate_gbps == 400.0 and p["gpu07/mlx5_10:1"].lid == 26
    assert p["gpu07/mlx5_2:1"].physical_state == "Disabled" and p["gpu07/mlx5_3:1"].width == "2X"
    assert all(q.source == "sysfs" for q in ports)
    # the class folder itself is accepted too
    assert read_ports(tmp_path / "sys/class/infiniband", host="gpu07") == ports
    assert looks_like_link_state(tmp_path) and looks_like_link_state(DATA / "ibstatus-4x-edr.txt")


def test_bad_inputs_are_one_line_usage_errors(tmp_path):
    (tmp_path / "x.txt").write_text("# nThread 1 nGpus 1\nnothing here\n")
    with pytest.raises(UsageError, match="not ibstat, ibstatus or ibv_devinfo"):
        read_ports(tmp_path / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no sys/class/infiniband"):
        read_ports(tmp_path / "empty")
    with pytest.raises(UsageError, match="cannot read"):
        read_ports(tmp_path / "missing.txt")
    assert not looks_like_link_state(tmp_path / "x.txt")


def test_topo_discover_takes_nic_speeds_and_link_layers_from_link_state():
    from fabricbench.topology.discover import discover

    topo, report = discover(link_state=DATA / "ibstat-mixed-eth-ib-lexical.txt", local=False, name="t")
    nics = {n.name: n for n in topo.node_type.nics}
    assert set(nics) == {"mlx5_0", "mlx5_1", "mlx5_2"}  # mlx5_10 is Down/Disabled: said, not a NIC
    assert nics["mlx5_0"].rate == 25.0 and nics["mlx5_0"].link_layer == "roce"  # 200 Gb/s Ethernet (RoCE)
    assert nics["mlx5_2"].rate == 12.5 and nics["mlx5_2"].link_layer == "ib"
    assert any("mlx5_10:1 is DOWN (Disabled)" in line for line in report)
