"""Node checks from saved trees and tool outputs (no GPU, no RDMA device needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fabricbench.health import nodecheck
from fabricbench.health.checks import Sources, all_checks

DATA = Path(__file__).parent / "data" / "health"
H100 = None


def _node_type(name="dgx-h100"):
    from fabricbench.topology.load import load_topology

    topo = load_topology(name)
    return topo.node_types[topo.fabric.node_type]


def _dev(root: Path, bdf: str, vendor: str, klass: str, speed=("32.0 GT/s PCIe", "32.0 GT/s PCIe"), width=(16, 16)):
    d = root / "bus" / "pci" / "devices" / bdf
    d.mkdir(parents=True)
    (d / "vendor").write_text(vendor + "\n")
    (d / "class").write_text(klass + "\n")
    (d / "current_link_speed").write_text(speed[0] + "\n")
    (d / "max_link_speed").write_text(speed[1] + "\n")
    (d / "current_link_width").write_text(f"{width[0]}\n")
    (d / "max_link_width").write_text(f"{width[1]}\n")
    return d


def _port(root: Path, ca: str, bdf_dir: Path, state="4: ACTIVE", phys="5: LinkUp", rate="400 Gb/sec (4X NDR)"):
    base = root / "class" / "infiniband" / ca
    (base / "ports" / "1").mkdir(parents=True)
    os.symlink(os.path.relpath(bdf_dir, base), base / "device")
    for name, value in (("state", state), ("phys_state", phys), ("rate", rate), ("link_layer", "InfiniBand")):
        (base / "ports" / "1" / name).write_text(value + "\n")


@pytest.fixture
def h100_tree(tmp_path):
    """A DGX H100-like sysfs: 7 of 8 GPUs on the bus (one lost), GPU 2 at x8, mlx5_3 port down, mlx5_4 at Gen4."""
    root = tmp_path / "sys"
    for i in range(7):
        _dev(root, f"0000:{0x18 + i:02x}:00.0", "0x10de", "0x030200", width=(8, 16) if i == 2 else (16, 16))
    nics = ["mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"]
    for i, ca in enumerate(nics):
        speed = ("16.0 GT/s PCIe", "32.0 GT/s PCIe") if ca == "mlx5_4" else ("32.0 GT/s PCIe", "32.0 GT/s PCIe")
        dev = _dev(root, f"0000:{0x40 + i:02x}:00.0", "0x15b3", "0x020700", speed=speed)
        _port(root, ca, dev, state="1: DOWN" if ca == "mlx5_3" else "4: ACTIVE",
              phys="3: Disabled" if ca == "mlx5_3" else "5: LinkUp")
    return root


def test_every_check_is_registered():
    assert set(all_checks()) == {"gpus", "nvlink", "pcie", "ports", "xid", "ecc"}


def test_gpu_count_and_model_against_topology(h100_tree):
    src = Sources(sysfs_root=h100_tree, nvidia_smi_q=DATA / "nvidia-smi-q-2gpu-pending-remap.txt", node_type=_node_type())
    res = all_checks()["gpus"].fn(src)
    assert res.status == "fail"
    assert "7 GPU(s) on the PCI bus, the topology says 8" in res.summary
    models = [f for f in res.findings if f.kind == "gpu"]
    assert [f.status for f in models] == ["pass", "pass"]  # 'NVIDIA H100 80GB HBM3' is an H100-SXM5-80GB
    assert any("lost to the driver" in f.detail for f in res.findings)  # driver sees 2, the bus 7


def test_pcie_width_and_nic_speed(h100_tree):
    res = all_checks()["pcie"].fn(Sources(sysfs_root=h100_tree))
    bad = {f.component: f.status for f in res.findings if f.status != "pass"}
    assert bad == {"gpu2/pcie": "fail", "mlx5_4/pcie": "fail"}
    assert res.status == "fail"


def test_pcie_idle_gpu_speed_is_a_warning(tmp_path):
    root = tmp_path / "sys"
    _dev(root, "0000:18:00.0", "0x10de", "0x030200", speed=("2.5 GT/s PCIe", "32.0 GT/s PCIe"))
    res = all_checks()["pcie"].fn(Sources(sysfs_root=root))
    assert res.status == "warn" and "idle" in res.findings[0].detail


def test_ports_against_topology(h100_tree):
    res = all_checks()["ports"].fn(Sources(sysfs_root=h100_tree, node_type=_node_type()))
    failed = [f.component for f in res.findings if f.status == "fail"]
    assert failed == ["mlx5_3:1"]
    assert "state DOWN" in res.summary and "physical state Disabled" in res.summary


def test_port_rate_below_topology(tmp_path):
    root = tmp_path / "sys"
    dev = _dev(root, "0000:40:00.0", "0x15b3", "0x020700")
    _port(root, "mlx5_0", dev, rate="200 Gb/sec (4X HDR)")
    res = all_checks()["ports"].fn(Sources(sysfs_root=root, node_type=_node_type()))
    assert "rate 200 Gb/s < 400 Gb/s" in res.summary
    assert sum(f.status == "fail" for f in res.findings) == 8  # and 7 topology NICs missing


def test_nvlink_inactive_link_and_count():
    src = Sources(nvlink_status=DATA / "nvlink-s-2gpu-one-inactive.txt", node_type=_node_type())
    res = all_checks()["nvlink"].fn(src)
    assert res.status == "fail"
    assert [f.component for f in res.findings if f.status == "fail"] == ["gpu1/nvlink5"]
    # 26.562 GB/s per link meets the topology's 25 GB/s
    assert sum(1 for f in res.findings if f.status == "pass") == 35


def test_ecc_pending_remap_and_uncorrectable():
    res = all_checks()["ecc"].fn(Sources(nvidia_smi_q=DATA / "nvidia-smi-q-2gpu-pending-remap.txt"))
    status = {f.component: f.status for f in res.findings}
    assert status == {"gpu0": "pass", "gpu0/rowremap": "pass", "gpu1": "fail", "gpu1/rowremap": "fail"}


def test_xid_since_last_run(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text((DATA / "kern-xid.log").read_text())
    state = tmp_path / "state"
    check = all_checks()["xid"].fn
    first = check(Sources(kernel_log=log, state_dir=state))
    assert first.status == "fail" and "codes 13, 79" in first.summary
    assert check(Sources(kernel_log=log, state_dir=state)).status == "pass"  # nothing new: not failed until logrotate
    with log.open("a") as fh:
        fh.write("Dec  5 03:00:00 gpu07 kernel: NVRM: Xid (PCI:0000:2a:00): 31, pid=1, name=a.out, Ch 00000008\n")
    third = check(Sources(kernel_log=log, state_dir=state))
    assert third.status == "warn" and "codes 31" in third.summary  # an application fault only warns
    log.write_text("Dec  6 00:00:00 gpu07 kernel: rotated\n")  # rotated: read from its start again
    assert check(Sources(kernel_log=log, state_dir=state)).status == "pass"


def test_node_without_gpus_is_never_a_silent_pass(tmp_path):
    (tmp_path / "sys").mkdir()
    report = nodecheck.run_checks(Sources(sysfs_root=tmp_path / "sys"), node="cpu1")
    assert report.status == "inconclusive" and report.exit_code == 3
    assert all(r.status == "unknown" for r in report.results)
    assert len(report.not_checked()) >= 6


def test_cli_node_quick_exit_codes(tmp_path, h100_tree):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-m", "fabricbench", "health", "node", "--quick", "--no-live", "--node", "gpu07",
           "--sysfs-root", str(h100_tree), "--topology", "dgx-h100", "--state-dir", str(tmp_path / "st"),
           "--nvidia-smi-q", str(DATA / "nvidia-smi-q-2gpu-pending-remap.txt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "FAIL     ports" in proc.stdout and "not checked:" in proc.stdout
    bad = subprocess.run(cmd[:-2] + ["--nvidia-smi-q", str(tmp_path / "nope")], capture_output=True, text=True,
                         env=env, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no such file" in bad.stderr


def test_ports_from_saved_ibstat():
    src = Sources(ib_ports=DATA / "ibstat-2ca-one-down.txt", node_type=_node_type())
    res = all_checks()["ports"].fn(src)
    status = {f.component: f.status for f in res.findings}
    assert status["mlx5_0:1"] == "pass" and status["mlx5_3:1"] == "fail"
    assert "state DOWN" in res.summary and "physical state Polling" in res.summary
    assert sum(s == "fail" for s in status.values()) == 7  # mlx5_3 down, 6 topology NICs absent from this output
