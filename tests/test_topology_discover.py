"""Discovery: each parser on real tool outputs (shared fixtures, read in place; each names its source in its .src
file) and on self-written samples (tests/data/topology-*, labelled), then the merged topology end to end."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from fabricbench.errors import UsageError
from fabricbench.topology.collectives import expectations
from fabricbench.topology.discover import discover
from fabricbench.topology.discover import ibnetdiscover, nccl_xml, nvidia_smi, nvml, slurm_topology, sysfs
from fabricbench.topology.load import dump_topology, load_text
from tests.test_topology_helpers import DATA, assert_usage_error, topo_cli


@pytest.fixture
def fx(fixtures_dir) -> Path:
    return fixtures_dir


# ---- nvidia-smi topo -m ----

def test_smi_dgx_h100_ansi_tabs_truncated(fx):
    facts, report = nvidia_smi.parse((fx / "nvidia-smi-topo/h100x8-dgx-12nic-ansi-underline-head-truncated-orcd.txt")
                                     .read_text())
    assert facts.gpus == 8 and facts.nvswitch is True and facts.nvlink_links_per_gpu == 18
    assert facts.gpu_numa == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len(facts.nics) == 12
    assert facts.nics[0].gpus == [0] and facts.nics[3].gpus == [1]  # GPU0-NIC0 PXB, GPU1-NIC3 PXB
    assert any("no rows for NIC3" in line for line in report.unread)  # cut by `head`
    assert any("NIC Legend" in line for line in report.unread)


def test_smi_a100_direct_nv4_mlx5_columns_indented(fx):
    facts, _ = nvidia_smi.parse((fx / "nvidia-smi-topo/a100x4-nv4-mlx5-columns-indented-locuaz.txt").read_text())
    assert facts.gpus == 4 and facts.nvswitch is False
    assert facts.nvlink_pairs == {(a, b): 4 for a in range(4) for b in range(a + 1, 4)}
    assert [n.name for n in facts.nics] == ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]
    assert [n.gpus for n in facts.nics] == [[0], [1], [2], [3]]


def test_smi_a100x8_condensed_no_nics(fx):
    facts, _ = nvidia_smi.parse((fx / "nvidia-smi-topo/a100x8-nv12-no-nic-condensed-stas00-ml-engineering.txt")
                                .read_text())
    assert facts.gpus == 8 and facts.nvswitch is True and facts.nvlink_links_per_gpu == 12 and not facts.nics
    assert facts.gpu_numa == [0, 0, 0, 0, 1, 1, 1, 1]


def test_smi_two_gpus_nv2_numa_na(fx):
    facts, report = nvidia_smi.parse((fx / "nvidia-smi-topo/2gpu-nv2-stas00-ml-engineering.txt").read_text())
    assert facts.gpus == 2 and facts.nvlink_pairs == {(0, 1): 2} and facts.gpu_numa == [None, None]
    assert any("NUMA affinity" in line for line in report.unread)


def test_smi_one_visible_gpu_in_a_slurm_job(fx):
    facts, report = nvidia_smi.parse((fx / "nvidia-smi-topo/b200-1gpu-visible-16nic-ansi-slurm-cgroup-orcd.txt")
                                     .read_text())
    assert facts.gpus == 1 and len(facts.nics) == 16 and facts.nics[4].gpus == [0]
    assert any("only one GPU is visible" in line for line in report.unread)


def test_smi_self_written_pcie_box_with_legend():
    facts, _ = nvidia_smi.parse((DATA / "topology-nvidia-smi-pcie-4gpu-selfwritten.txt").read_text())
    assert facts.gpus == 4 and facts.nvlink_links_per_gpu is None
    assert [(n.name, n.gpus, n.numa) for n in facts.nics] == [("mlx5_0", [0, 1], 0), ("mlx5_1", [2, 3], 1)]
    assert sorted((s["gpus"], s["nics"]) for s in facts.pcie_switches) == [([0, 1], ["mlx5_0"]), ([2, 3], ["mlx5_1"])]


def test_smi_self_written_glued_columns():
    facts, report = nvidia_smi.parse((DATA / "topology-nvidia-smi-glued-selfwritten.txt").read_text())
    assert facts.gpus == 4 and facts.nvswitch is True and facts.nvlink_links_per_gpu == 18
    assert facts.gpu_numa == [0, 0, 1, 1] and [(n.name, n.gpus) for n in facts.nics] == [("mlx5_0", [0])]
    assert not any("cut short" in line for line in report.unread)


@pytest.mark.parametrize("text,fragment", [("", "no `nvidia-smi topo -m` matrix"),
                                           ("\tGPU0\tGPU1\tCPU Affinity\n", "no row follows"),
                                           ("Failed to initialize NVML: Driver/library version mismatch\n",
                                            "no `nvidia-smi topo -m` matrix")])
def test_smi_garbage(text, fragment):
    with pytest.raises(UsageError, match=fragment):
        nvidia_smi.parse(text)


# ---- NCCL topology XML ----

def test_nccl_xml_ibm_dump_nvswitch_and_nics(fx):
    facts, _ = nccl_xml.parse((fx / "nccl-topo-xml/ibm-cloud-gx3d-h100x8-vsi-8x200g-roce-dump.txt").read_text())
    assert facts.gpus == 8 and facts.nvlink_generation == 4 and facts.nvswitch is True
    assert facts.nvlink_links_per_gpu == 18  # 5 + 5 + 4 + 4 links to the four NVSwitch chips
    assert facts.pcie_gen == 5 and facts.gpu_numa == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {n.name: n.rate for n in facts.nics}["mlx5_7"] == pytest.approx(25.0)  # speed="200000" Mb/s
    assert len(facts.pcie_switches) == 8 and all(len(s["gpus"]) == 1 for s in facts.pcie_switches)


def test_nccl_xml_hand_written_files_say_what_they_lack(fx):
    facts, report = nccl_xml.parse((fx / "nccl-topo-xml/azure-ndv4-a100x8-hand-written-topo.txt").read_text())
    assert facts.gpus == 8 and facts.pcie_gen == 4 and all(n.link_layer == "ib" for n in facts.nics)
    assert len(facts.nics) == 8 and len(facts.pcie_switches) == 4
    assert any("no architecture" in line for line in report.unread)
    assert any("has no <net speed" in line for line in report.unread)


def test_nccl_xml_p4d_comments_and_switches(fx):
    facts, _ = nccl_xml.parse((fx / "nccl-topo-xml/aws-p4d-24xl-a100x8-efa-static-topo.txt").read_text())
    assert facts.gpus == 8 and facts.pcie_gen == 3
    assert sorted(s["gpus"] for s in facts.pcie_switches) == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_nccl_xml_self_pointing_nvlink_is_reported(fx):
    facts, report = nccl_xml.parse((fx / "nccl-topo-xml/azure-ncv4-a100x4-nvlink-pairs-eth-topo.txt").read_text())
    assert facts.gpus == 4 and facts.nvlink_generation == 3 and facts.nvlink_links_per_gpu is None
    assert any("pointing at itself" in line for line in report.unread)


def test_nccl_xml_without_classes_is_refused_clearly(fx):
    with pytest.raises(UsageError, match="carry no class"):
        nccl_xml.parse((fx / "nccl-topo-xml/aws-g5-48xl-a10gx8-efa-static-topo.txt").read_text())


@pytest.mark.parametrize("text,fragment", [("<system><cpu numaid='0'><pci busid=", "not well-formed"),
                                           ("<html><body/></html>", "root element is <html>"),
                                           ("<system version='1'/>", "no GPU and no NIC")])
def test_nccl_xml_garbage(text, fragment):
    with pytest.raises(UsageError, match=fragment):
        nccl_xml.parse(text)


def test_nccl_xml_truncated_real_dump(fx):
    text = (fx / "nccl-topo-xml/ibm-cloud-gx3d-h100x8-vsi-8x200g-roce-dump.txt").read_text()
    with pytest.raises(UsageError, match="not well-formed"):
        nccl_xml.parse(text[: len(text) // 2])


# ---- Slurm topology.conf ----

def test_slurm_binary_tree(fx):
    facts, _ = slurm_topology.parse((fx / "slurm-topology/topology-conf-binary-tree-8node-schedmd-doc.txt").read_text())
    switches = {s["name"]: s for s in facts.switches}
    assert switches["s6"]["switches"] == ["s4", "s5"] and switches["s0"]["nodes"] == ["tux0", "tux1"]


def test_slurm_multi_parent_linkspeed_is_not_a_rate(fx):
    facts, report = slurm_topology.parse((fx / "slurm-topology/topology-conf-2level-linkspeed-schedmd-doc.txt")
                                         .read_text())
    assert len(facts.switches) == 8 and report.evidence["slurm_linkspeed"]["s3"] == "1800"
    assert any("relative weight" in line for line in report.unread)


def test_slurm_generated_three_levels_hostlists(fx):
    facts, _ = slurm_topology.parse((fx / "slurm-topology/topology-conf-3level-tree-generated-nvidia-topograph.txt")
                                    .read_text())
    nodes = [h for s in facts.switches for h in s["nodes"]]
    assert len(nodes) == 96 and "srv6208" in nodes
    assert {s["name"]: s for s in facts.switches}["switch.3.1"]["switches"][-1] == "switch.2.6"


def test_slurm_blocks(fx):
    facts, _ = slurm_topology.parse((fx / "slurm-topology/topology-conf-block-plugin-schedmd-man5.txt").read_text())
    assert list(facts.blocks) == ["block1", "block2", "block3", "block4"] and len(facts.blocks["block4"]) == 32


@pytest.mark.parametrize("text,fragment", [
    ("# only comments\n", "no SwitchName= or BlockName="),
    ("SwitchName=s0 Switches=s9\n", "which no SwitchName= defines"),
    ("SwitchName=s0 Nodes=tux[0-\n", "not a hostlist"),
    ("SwitchName=s0 Nodes=a\nSwitchName=s0 Nodes=b\n", "defined twice"),
    ("SwitchName=s0 Nodes=a\nBlockName=b1 Nodes=c\n", "mixes"),
])
def test_slurm_garbage(text, fragment):
    with pytest.raises(UsageError, match=fragment):
        slurm_topology.parse(text)


def test_slurm_cycle_is_refused_by_the_schema(tmp_path):
    conf = tmp_path / "topology.conf"
    conf.write_text("# SELF-WRITTEN: a cycle\nSwitchName=s0 Switches=s1 Nodes=a\nSwitchName=s1 Switches=s0 Nodes=b\n")
    res = topo_cli("topo", "discover", "--no-local", "--slurm-topology", str(conf), "-o", str(tmp_path / "t.yaml"))
    assert_usage_error(res, "cycle", "a tree is required")
    assert not (tmp_path / "t.yaml").exists()


# ---- ibnetdiscover ----

def test_ibnetdiscover_superpod(fx):
    facts, report = ibnetdiscover.parse(
        (fx / "slurm-topology/ibnetdiscover-ndr-dgx-superpod-full-fabric-nvidia-topograph.txt").read_text())
    assert facts.host_port_rate == pytest.approx(50.0)  # 4xNDR
    leaves = [s for s in facts.switches if s["nodes"]]
    spines = [s for s in facts.switches if s["switches"]]
    assert leaves and spines and "A09-P1-IBLEAF-04-04" in {s["name"] for s in leaves}
    assert "a08-p1-dgx-04-c01" in {h for s in leaves for h in s["nodes"]}
    assert any("SHARP aggregation" in line for line in report.read)
    assert any("without a host name" in line for line in report.unread)
    assert facts.host_ports == 4 and any("fewer than 4 CA ports" in line for line in report.unread)


def test_ibnetdiscover_man_page_example_degraded_link(fx):
    facts, report = ibnetdiscover.parse(
        (fx / "slurm-topology/ibnetdiscover-sdr-voltaire-example-rdma-core-man.txt").read_text())
    assert len(facts.switches) == 2 and facts.host_port_rate == pytest.approx(1.0)  # 4xSDR = 8 Gb/s data
    assert any("1xSDR" in line for line in report.evidence["ib_degraded_links"])


def test_ibnetdiscover_single_ca_is_refused(fx):
    with pytest.raises(UsageError, match="nothing to build a tree from"):
        ibnetdiscover.parse(
            (fx / "slurm-topology/ibnetdiscover-truncated-single-ca-gb200-nvidia-topograph.txt").read_text())


# ---- sysfs ----

def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _fake_sysfs(root: Path) -> Path:
    """SELF-WRITTEN /sys tree (formats as the kernel writes them; see tests/data/topology-sysfs-README.txt)."""
    for i, (rate, layer) in enumerate([("400 Gb/sec (4X NDR)", "InfiniBand"), ("200 Gb/sec (2X NDR)", "InfiniBand"),
                                       ("100 Gb/sec (4X EDR)", "Ethernet")]):
        dev = root / f"sys/class/infiniband/mlx5_{i}"
        _write(dev / "ports/1/rate", rate)
        _write(dev / "ports/1/state", "4: ACTIVE")
        _write(dev / "ports/1/phys_state", "5: LinkUp")
        _write(dev / "ports/1/link_layer", layer)
        _write(dev / "ports/1/counters/symbol_error", "17" if i == 1 else "0")
        _write(dev / "ports/1/counters/link_downed", "0")
        _write(dev / "device/numa_node", str(i % 2))
        _write(dev / "device/current_link_speed", "16.0 GT/s PCIe" if i == 0 else "32.0 GT/s PCIe")
        _write(dev / "device/max_link_speed", "32.0 GT/s PCIe")
        _write(dev / "device/current_link_width", "16")
        _write(dev / "device/max_link_width", "16")
    down = root / "sys/class/infiniband/mlx5_3"
    _write(down / "ports/1/rate", "10 Gb/sec (4X SDR)")
    _write(down / "ports/1/state", "1: DOWN")
    eth = root / "sys/class/net/eno1"
    _write(eth / "speed", "25000")
    _write(eth / "operstate", "up")
    _write(eth / "type", "1")
    _write(eth / "device/numa_node", "0")
    _write(root / "sys/class/net/lo/speed", "-1")
    gpu = root / "sys/bus/pci/devices/0000:1b:00.0"
    _write(gpu / "vendor", "0x10de")
    _write(gpu / "class", "0x030200")
    _write(gpu / "current_link_speed", "32.0 GT/s PCIe")
    _write(gpu / "max_link_speed", "32.0 GT/s PCIe")
    _write(gpu / "current_link_width", "8")
    _write(gpu / "max_link_width", "16")
    (root / "sys/module/nvidia_peermem").mkdir(parents=True)
    return root


def test_sysfs_rates_states_and_evidence(tmp_path):
    nics, report = sysfs.read(_fake_sysfs(tmp_path))
    by_name = {n.name: n for n in nics}
    assert by_name["mlx5_0"].rate == pytest.approx(50.0) and by_name["mlx5_0"].link_layer == "ib"
    assert by_name["mlx5_1"].rate == pytest.approx(25.0)  # 2X NDR: half a port
    assert by_name["mlx5_2"].link_layer == "roce" and by_name["eno1"].rate == pytest.approx(25 / 8)
    assert "mlx5_3" not in by_name and any("mlx5_3 port 1 is 1: DOWN" in x for x in report.unread)
    degraded = " | ".join(report.evidence["degraded"])
    assert "mlx5_1 port 1: 200 Gb/sec (2X NDR)" in degraded
    assert "errors {'symbol_error': 17}" in degraded
    assert "16.0 GT/s PCIe x16 of 32.0 GT/s PCIe x16" in degraded  # NIC at half its PCIe speed
    assert "0000:1b:00.0: PCIe 32.0 GT/s PCIe x8 of 32.0 GT/s PCIe x16" in degraded  # GPU at half width
    assert report.evidence["gpudirect_rdma"]["nvidia_peermem_loaded"] is True


def test_sysfs_empty_root_says_what_is_missing(tmp_path):
    nics, report = sysfs.read(tmp_path)
    assert nics == [] and any("no " in x and "infiniband" in x for x in report.unread)


# ---- NVML ----

def test_nvml_absent_is_reported_not_fatal(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    facts, report = nvml.read()
    assert facts is None and "pynvml is not installed" in report.unread[0]


def test_nvml_with_a_fake_library_reads_links_and_pcie(monkeypatch):
    """SELF-WRITTEN stand-in for pynvml (same function names) for a 4-GPU H100 box with one NVLink down."""
    fake = types.SimpleNamespace(
        NVML_NVLINK_MAX_LINKS=18, nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 4,
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetCurrPcieLinkGeneration=lambda h: 5, nvmlDeviceGetMaxPcieLinkGeneration=lambda h: 5,
        nvmlDeviceGetCurrPcieLinkWidth=lambda h: 16, nvmlDeviceGetMaxPcieLinkWidth=lambda h: 16,
        nvmlDeviceGetNvLinkState=lambda h, link: 0 if (h == 2 and link == 7) else 1,
        nvmlDeviceGetNvLinkErrorCounter=lambda h, link, c: 3 if (h == 2 and link == 7) else 0)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    facts, report = nvml.read()
    assert facts.gpus == 4 and facts.nvlink_generation == 4 and facts.pcie_gen == 5
    assert report.evidence["nvml"][2]["nvlinks_down"] == [7]
    assert report.evidence["nvml"][2]["nvlinks"][7]["errors"]["replay"] == 3


# ---- merged discovery, end to end ----

def test_discover_smi_plus_sysfs_fills_nic_rates(tmp_path):
    root = _fake_sysfs(tmp_path)
    topo, lines = discover(nvidia_smi_topo=DATA / "topology-nvidia-smi-pcie-4gpu-selfwritten.txt", sysfs_root=root,
                           local=False, name="box")
    nt = topo.node_type
    assert nt.gpus.count == 4 and nt.nvlink is None
    assert {n.name: n.rate for n in nt.nics} == {"mlx5_0": 50.0, "mlx5_1": 25.0}
    assert topo.evidence["degraded"]
    assert any(line.startswith("assumed: GPU PCIe generation 4") for line in lines)
    again = load_text(dump_topology(topo), "written")
    assert again.discovery["assumed"]
    row = expectations(again, ops=["all_reduce"], algos=["ring"])["rows"][0]
    assert row["expected_busbw"] > 0


def test_discover_xml_with_slurm_tree_gives_cluster_expectations(fx, tmp_path):
    topo, _ = discover(nccl_xml=fx / "nccl-topo-xml/ibm-cloud-gx3d-h100x8-vsi-8x200g-roce-dump.txt",
                       slurm_topology=fx / "slurm-topology/topology-conf-binary-tree-8node-schedmd-doc.txt",
                       local=False)
    assert topo.fabric.kind == "tree" and len(topo.host_names()) == 8
    row = expectations(topo, nodes=4, ops=["all_reduce"], algos=["ring"])["rows"][0]
    assert row["bound"] == "nic" and row["expected_busbw"] == pytest.approx(8 * 25 * 0.95)


def test_discover_needs_a_source():
    with pytest.raises(UsageError, match="nothing to read"):
        discover(local=False)


def test_cli_discover_from_saved_files(fx, tmp_path):
    out = tmp_path / "cluster.yaml"
    res = topo_cli("topo", "discover", "--no-local",
                   "--nvidia-smi-topo", str(fx / "nvidia-smi-topo/h100x8-dgx-12nic-ansi-underline-head-truncated-orcd.txt"),
                   "--ibnetdiscover", str(fx / "slurm-topology/ibnetdiscover-sdr-voltaire-example-rdma-core-man.txt"),
                   "--link-rate", "400 Gb/s", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "could not read:" in res.stderr and "no rows for NIC3" in res.stderr
    assert "assumed: NVLink generation 4" in res.stderr
    res = topo_cli("topo", "validate", str(out))
    assert res.returncode == 0 and "ok" in res.stdout


@pytest.mark.parametrize("option,fixture", [
    ("--ibnetdiscover", "slurm-topology/ibnetdiscover-truncated-single-ca-gb200-nvidia-topograph.txt"),
    ("--nccl-xml", "nccl-topo-xml/aws-g5-48xl-a10gx8-efa-static-topo.txt"),
    ("--nvidia-smi-topo", "nccl-topo-xml/azure-ndv2-v100x8-hand-written-topo.txt"),  # the wrong tool's output
    ("--slurm-topology", "nvidia-smi-topo/2gpu-nv2-stas00-ml-engineering.txt"),
])
def test_cli_discover_bad_tool_outputs_exit_2(fx, tmp_path, option, fixture):
    res = topo_cli("topo", "discover", "--no-local", option, str(fx / fixture), "-o", str(tmp_path / "t.yaml"))
    assert_usage_error(res)
    assert not (tmp_path / "t.yaml").exists()
