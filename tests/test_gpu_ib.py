"""`fabricbench ib` without NICs or GPUs: NIC discovery from a fake sysfs tree, exact HCA selection, the GPU on
the NIC's PCIe switch, the workers' environment (one fresh process per NIC), NCCL's log read for GDRDMA, the
loopback label, result rows, and the command's refusals. The workers are replaced by a fake that writes what
a real worker writes (its result file and NCCL's INFO log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from fabricbench.errors import UsageError
from fabricbench.gpu import ib, sysfs

DATA = Path(__file__).parent / "data"


def run_cli(*args, env=None):
    """`fabricbench ARGS` through the GPU area's own entry point (python -m fabricbench.gpu), so that another
    area's unfinished import cannot break these tests; test_gpu_cli checks the real entry registers it."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                "SLURM_JOB_ID", "SLURM_STEP_ID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "fabricbench.gpu", *args], capture_output=True, text=True,
                          timeout=120, env=full_env, cwd=REPO)
# name -> (pci chain under devices/, numa); GPUs are PCI devices only, NICs also get class/infiniband entries
TOPOLOGY = {
    "gpu0": ("pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/0000:03:00.0", 0),
    "mlx5_0": ("pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0/0000:04:00.0", 0),
    "gpu1": ("pci0000:00/0000:00:02.0/0000:05:00.0/0000:06:00.0/0000:07:00.0", 0),
    "mlx5_1": ("pci0000:00/0000:00:02.0/0000:05:00.0/0000:06:01.0/0000:08:00.0", 0),
    "gpu2": ("pci0000:80/0000:80:01.0/0000:81:00.0/0000:82:00.0/0000:83:00.0", 1),
    "mlx5_10": ("pci0000:80/0000:80:01.0/0000:81:00.0/0000:82:01.0/0000:84:00.0", 1),
    "mlx5_2": ("pci0000:80/0000:80:03.0/0000:90:00.0", 1),  # no switch shared with any GPU
}
PORTS = {"mlx5_0": ("4: ACTIVE", "5: LinkUp"), "mlx5_1": ("4: ACTIVE", "5: LinkUp"),
         "mlx5_10": ("4: ACTIVE", "5: LinkUp"), "mlx5_2": ("1: DOWN", "3: Disabled")}
GPU_BUS = {0: "0000:03:00.0", 1: "0000:07:00.0", 2: "0000:83:00.0"}


def make_sysfs(root: Path) -> Path:
    for name, (chain, numa) in TOPOLOGY.items():
        dev = root / "devices" / chain
        dev.mkdir(parents=True)
        (dev / "numa_node").write_text(f"{numa}\n")
        bdf = chain.split("/")[-1]
        link = root / "bus" / "pci" / "devices" / bdf
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(dev, link.parent), link)
        if name.startswith("mlx5"):
            ibdir = root / "class" / "infiniband" / name
            port = ibdir / "ports" / "1"
            port.mkdir(parents=True)
            state, phys = PORTS[name]
            (port / "state").write_text(state + "\n")
            (port / "phys_state").write_text(phys + "\n")
            (port / "rate").write_text("400 Gb/sec (4X NDR)\n")
            (port / "link_layer").write_text("InfiniBand\n")
            os.symlink(os.path.relpath(dev, ibdir), ibdir / "device")
    return root


@pytest.fixture
def root(tmp_path):
    return make_sysfs(tmp_path / "sys")


def test_discovery_reads_ports_states_rates_and_pci_chains(root):
    ports = sysfs.discover_ports(root)
    assert [p.name for p in ports] == ["mlx5_0:1", "mlx5_1:1", "mlx5_10:1", "mlx5_2:1"]
    down = ports[-1]
    assert (down.state, down.phys_state, down.active) == ("DOWN", "Disabled", False)
    first = ports[0]
    assert first.rate_gbps == 400.0 and first.link_layer == "InfiniBand" and first.numa_node == 0
    assert first.pci_path == ("pci0000:00", "0000:00:01.0", "0000:01:00.0", "0000:02:01.0", "0000:04:00.0")
    assert sysfs.discover_ports(root / "nothing") == []


def test_exact_hca_selection_never_matches_a_prefix(root):
    ports = sysfs.discover_ports(root)
    assert [p.name for p in sysfs.select_ports(ports, "mlx5_1")] == ["mlx5_1:1"]
    assert [p.name for p in sysfs.select_ports(ports, "mlx5_10:1,mlx5_0")] == ["mlx5_10:1", "mlx5_0:1"]
    assert sysfs.nccl_ib_hca(ports[1]) == "=mlx5_1:1"
    with pytest.raises(UsageError, match="no RDMA device named 'mlx5_7'.*mlx5_0, mlx5_1, mlx5_10, mlx5_2"):
        sysfs.select_ports(ports, "mlx5_7")
    with pytest.raises(UsageError, match="mlx5_1 has no port 2; its ports: mlx5_1:1"):
        sysfs.select_ports(ports, "mlx5_1:2")


def test_pcie_relation_and_the_gpu_sharing_the_nics_switch(root):
    ports = {p.device: p for p in sysfs.discover_ports(root)}
    near0 = sysfs.nearest_gpus(root, ports["mlx5_0"], GPU_BUS)
    assert [(a.gpu, a.relation) for a in near0] == [(0, "PIX"), (1, "PHB"), (2, "SYS")]
    assert near0[0].shares_switch and not near0[1].shares_switch
    assert sysfs.nearest_gpus(root, ports["mlx5_10"], GPU_BUS)[0].gpu == 2
    near2 = sysfs.nearest_gpus(root, ports["mlx5_2"], GPU_BUS)
    assert (near2[0].gpu, near2[0].relation, near2[0].same_numa) == (2, "PHB", True)
    assert sysfs.relation(("pci0000:00", "a", "b", "c", "d", "gpu"), ("pci0000:00", "a", "b", "nic"))[0] == "PXB"
    assert sysfs.relation((), ("x",)) == ("unknown", 0)


def test_plan_pins_the_nearest_gpu_and_honours_gpu_map(root):
    ports = sysfs.discover_ports(root)
    plans = ib.plan_nics(ports, GPU_BUS, ib.IbConfig(sysfs_root=str(root)))
    assert {p.port.name: p.gpus for p in plans} == {"mlx5_0:1": [0], "mlx5_1:1": [1], "mlx5_10:1": [2],
                                                    "mlx5_2:1": [2]}
    assert "no GPU shares mlx5_2's PCIe switch" in plans[-1].note and plans[0].note == ""
    loop = ib.plan_nics(ports, GPU_BUS, ib.IbConfig(sysfs_root=str(root), loopback=True))
    assert loop[0].gpus == [0, 1]
    forced = ib.plan_nics(ports, GPU_BUS, ib.IbConfig(sysfs_root=str(root), gpu_map="mlx5_0=2"))
    assert forced[0].gpus == [2] and forced[0].note == ""
    with pytest.raises(UsageError, match="mlx5_9"):
        ib.plan_nics(ports, GPU_BUS, ib.IbConfig(sysfs_root=str(root), gpu_map="mlx5_9=0"))
    with pytest.raises(UsageError, match="GPU 7 does not exist"):
        ib.plan_nics(ports, GPU_BUS, ib.IbConfig(sysfs_root=str(root), gpu_map="mlx5_0=7"))
    with pytest.raises(UsageError, match="two GPUs.*has 1"):
        ib.plan_nics(ports, {0: GPU_BUS[0]}, ib.IbConfig(sysfs_root=str(root), loopback=True))


def test_worker_environment_selects_one_port_and_forces_the_network_in_loopback(tmp_path):
    port = sysfs.IbPort("mlx5_1", 1, "ACTIVE", "LinkUp", "400 Gb/sec (4X NDR)", "InfiniBand")
    base = {"NCCL_IB_HCA": "mlx5", "NCCL_IB_DISABLE": "1", "RANK": "3", "NCCL_ALGO": "Ring", "PATH": "/bin"}
    env = ib.worker_env(base, port, True, tmp_path / "x%.log")
    assert env["NCCL_IB_HCA"] == "=mlx5_1:1"
    assert env["NCCL_P2P_DISABLE"] == "1" and env["NCCL_SHM_DISABLE"] == "1"
    assert "NCCL_IB_DISABLE" not in env and "RANK" not in env
    assert env["NCCL_ALGO"] == "Ring" and env["NCCL_DEBUG"] == "INFO"
    assert env["NCCL_DEBUG_FILE"].endswith("x%%.log")
    pair = ib.worker_env(base, port, False, tmp_path / "y.log")
    assert "NCCL_P2P_DISABLE" not in pair and "NCCL_SHM_DISABLE" not in pair


class FakeWorkers:
    """Stands in for spawn_workers: checks each job, writes the result file and NCCL log a worker would."""

    def __init__(self, log: str | None = "gpu-nccl-ib-loopback-gdr.log", nwrong: int = 0, fail_nic: str | None = None,
                 used_device: str | None = None):
        self.log, self.nwrong, self.fail_nic, self.used_device = log, nwrong, fail_nic, used_device
        self.calls: list[list[ib.WorkerJob]] = []

    def __call__(self, jobs, timeout):
        self.calls.append(jobs)
        errors = []
        for job in jobs:
            args = dict(zip(job.cmd[3::2], job.cmd[4::2]))
            nic = args["--nic"]
            assert job.cmd[1:3] == ["-m", "fabricbench.gpu.ib_worker"]
            assert job.env["NCCL_IB_HCA"] == "=" + nic
            job.result.parent.mkdir(parents=True, exist_ok=True)
            if nic == self.fail_nic:
                job.result.write_text(json.dumps({"ok": False, "rank": int(args["--rank"]), "nic": nic,
                                                  "error": "NCCL error: remote process exited"}))
                errors.append("worker exited 1: NCCL error")
                continue
            size, iters = int(args["--size"]), int(args["--iters"])
            dirs = {d: {"bytes": size * iters, "seconds": size * iters / g / 1e9, "gbps": g,
                        "time_us": size / g / 1e3, "nwrong": self.nwrong if d == "0->1" else 0}
                    for d, g in (("0->1", 45.0), ("1->0", 44.0))}
            job.result.write_text(json.dumps({"ok": True, "rank": int(args["--rank"]), "nic": nic,
                                              "directions": dirs}))
            if self.log:
                text = (DATA / self.log).read_text().replace("mlx5_1:1", self.used_device or nic)
                job.log.write_text(text)
            errors.append(None)
        return errors


def test_loopback_run_rows_gdr_and_the_never_leaves_the_adapter_note(root, tmp_path):
    cfg = ib.IbConfig(hca="mlx5_0,mlx5_2", loopback=True, size=1 << 20, iters=5, sysfs_root=str(root),
                      out_dir=str(tmp_path / "out"), run_id="r1")
    workers = FakeWorkers()
    lines: list[str] = []
    rows = ib.run_ib(GPU_BUS, cfg, ib.Coordinator(), "node1", spawn=workers, progress=lines.append, base_env={})
    assert len(workers.calls) == 1  # the DOWN port is not measured
    jobs = workers.calls[0]
    assert [j.cmd[j.cmd.index("--gpu") + 1] for j in jobs] == ["0", "1"]  # nearest GPU first, then the next
    assert all(j.env["NCCL_P2P_DISABLE"] == "1" and j.env["NCCL_SHM_DISABLE"] == "1" for j in jobs)
    assert len({j.cmd[j.cmd.index("--master-port") + 1] for j in jobs}) == 1
    ok, down = rows
    assert (ok["nic"], ok["peer"], ok["status"], ok["row_kind"], ok["direction"]) == \
        ("mlx5_0:1", "loopback", "ok", "nic", "loopback")
    assert ok["gbps"] == 45.0 and ok["gbps_reverse"] == 44.0 and ok["nwrong"] == 0
    assert ok["gdr"] is True and ok["staging"] == "gpudirect" and ok["transport"] == "NET/IB/GDRDMA"
    assert "never leaves" in ok["note"] and ok["gpu_relation"] == "PIX"
    assert (down["nic"], down["status"]) == ("mlx5_2:1", "failed") and "DOWN (Disabled)" in down["error"]
    assert any("never leaves" in ln for ln in lines)
    assert any(ln.startswith("node1 mlx5_0:1 -> loopback: 45.00 GB/s") and "90% of 50 GB/s line" in ln for ln in lines)


def test_host_staged_wrong_device_socket_and_corruption_are_flagged(root, tmp_path):
    base = dict(hca="mlx5_1", loopback=True, size=1 << 20, iters=5, sysfs_root=str(root))
    staged = ib.run_ib(GPU_BUS, ib.IbConfig(**base, out_dir=str(tmp_path / "a")), ib.Coordinator(), "n",
                       spawn=FakeWorkers(log="gpu-nccl-ib-loopback-host-staged.log"), base_env={})[0]
    assert staged["gdr"] is False and staged["staging"] == "host-staged" and staged["status"] == "ok"
    assert "host-staged: NCCL did not report GDRDMA" in staged["note"]
    wrong_dev = ib.run_ib(GPU_BUS, ib.IbConfig(**base, out_dir=str(tmp_path / "b")), ib.Coordinator(), "n",
                          spawn=FakeWorkers(used_device="mlx5_10:1"), base_env={})[0]
    assert wrong_dev["status"] == "failed" and "NCCL used mlx5_10:1 although mlx5_1:1 alone" in wrong_dev["error"]
    corrupt = ib.run_ib(GPU_BUS, ib.IbConfig(**base, out_dir=str(tmp_path / "c")), ib.Coordinator(), "n",
                        spawn=FakeWorkers(nwrong=17), base_env={})[0]
    assert corrupt["status"] == "wrong-data" and corrupt["nwrong"] == 17
    nolog = ib.run_ib(GPU_BUS, ib.IbConfig(**base, out_dir=str(tmp_path / "d")), ib.Coordinator(), "n",
                      spawn=FakeWorkers(log=None), base_env={})[0]
    assert nolog["status"] == "failed" and "no NCCL INFO log" in nolog["error"] and nolog["staging"] == "unknown"
    failed = ib.run_ib(GPU_BUS, ib.IbConfig(**base, out_dir=str(tmp_path / "e")), ib.Coordinator(), "n",
                       spawn=FakeWorkers(fail_nic="mlx5_1:1"), base_env={})[0]
    assert failed["status"] == "failed" and "remote process exited" in failed["error"] and failed["gbps"] is None
    sock = ib.nccl_verdict({"ib_devices": [], "transports": {"NET/Socket": 4}, "gdr": None}, sysfs.discover_ports(root)[0])
    assert "TCP sockets" in sock["problem"]


class TwoNodes(ib.Coordinator):
    world = 2
    master_addr = "10.0.0.1"
    master_port = 29700

    def __init__(self, rank: int, peer_active: list[str], peer_host: str = "node2"):
        self.rank, self.peer_active, self.peer_host = rank, peer_active, peer_host

    def allgather(self, obj):
        peer = {"host": self.peer_host, "active": self.peer_active}
        return [obj, peer] if self.rank == 0 else [peer, obj]


def test_between_nodes_matches_rails_and_uses_a_port_per_nic(root, tmp_path):
    cfg = ib.IbConfig(hca="mlx5_0,mlx5_1,mlx5_10", size=1 << 20, iters=5, sysfs_root=str(root),
                      out_dir=str(tmp_path / "o"))
    workers = FakeWorkers()
    rows = ib.run_ib(GPU_BUS, cfg, TwoNodes(1, ["mlx5_0:1", "mlx5_10:1"]), "node1", spawn=workers, base_env={})
    assert [len(c) for c in workers.calls] == [1, 1]  # one local worker per NIC, mlx5_1 not active on the peer
    ports = [c[0].cmd[c[0].cmd.index("--master-port") + 1] for c in workers.calls]
    assert ports == ["29701", "29703"] and workers.calls[0][0].cmd[workers.calls[0][0].cmd.index("--rank") + 1] == "1"
    assert all("NCCL_P2P_DISABLE" not in c[0].env for c in workers.calls)
    by = {r["nic"]: r for r in rows}
    assert by["mlx5_0:1"]["peer"] == "node2" and by["mlx5_0:1"]["direction"] == "out"
    assert by["mlx5_0:1"]["gbps"] == 44.0  # rank 1's own sending direction, 1->0
    assert by["mlx5_1:1"]["status"] == "failed" and "not active on the peer node2" in by["mlx5_1:1"]["error"]
    with pytest.raises(UsageError, match="both ranks run on node1"):
        ib.run_ib(GPU_BUS, cfg, TwoNodes(0, [], peer_host="node1"), "node1", spawn=workers, base_env={})


def test_spawn_workers_runs_real_processes_and_kills_on_timeout(tmp_path):
    def job(code: str, name: str) -> ib.WorkerJob:
        return ib.WorkerJob(0, [sys.executable, "-c", code], dict(os.environ), tmp_path / f"{name}.json",
                            tmp_path / "logs" / f"{name}.log")

    ok = job("import sys; sys.exit(0)", "a")
    bad = job("import sys; sys.stderr.write('boom\\n'); sys.exit(3)", "b")
    assert ib.spawn_workers([ok, bad], 30) == [None, "worker exited 3: boom"]
    hang = job("import time; time.sleep(60)", "c")
    errors = ib.spawn_workers([hang], 1.5)
    assert errors[0].startswith("no result after 2 s") or errors[0].startswith("no result after 1 s")


# -- the command line ----------------------------------------------------------------------------------------------
def _fake_env(tmp_path, spec: dict) -> dict:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return {"FABRICBENCH_GPU_API": f"fake:{path}"}


def test_cli_list_shows_ports_states_gpus_and_the_exact_hca_string(root, tmp_path):
    env = _fake_env(tmp_path, {"devices": [{"pci_bus_id": b} for b in GPU_BUS.values()]})
    proc = run_cli("ib", "--list", "--sysfs-root", str(root), env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("mlx5_0:1: ACTIVE (LinkUp), 400 Gb/sec (4X NDR), InfiniBand; GPU 0 [PIX]; "
                               "NCCL_IB_HCA==mlx5_0:1")
    assert "mlx5_2:1: DOWN (Disabled)" in lines[3] and "no GPU shares" in lines[3]


@pytest.mark.parametrize("args, message", [
    (["--hca", "mlx5_9", "--loopback"], "no RDMA device named 'mlx5_9'"),
    (["--loopback", "--size", "3"], "multiple of 4 bytes"),
    ([], "between two nodes runs as 2 ranks"),
    (["--loopback", "--iters", "0"], "--iters must be positive"),
])
def test_cli_refusals_are_one_line_exit_2(root, tmp_path, args, message):
    env = _fake_env(tmp_path, {"devices": [{"pci_bus_id": b} for b in GPU_BUS.values()]})
    proc = run_cli("ib", "--sysfs-root", str(root), *args, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_loopback_needs_two_gpus_and_enough_memory(root, tmp_path):
    one = _fake_env(tmp_path, {"devices": [{"pci_bus_id": GPU_BUS[0]}]})
    proc = run_cli("ib", "--loopback", "--sysfs-root", str(root), "--list", env=one)
    assert proc.returncode == 2 and "has 1" in proc.stderr
    small = _fake_env(tmp_path, {"devices": [{"pci_bus_id": b, "free_bytes": 1 << 20} for b in GPU_BUS.values()]})
    proc = run_cli("ib", "--loopback", "--sysfs-root", str(root), "--size", "64M", "--list", env=small)
    assert proc.returncode == 2 and "only 0.00 GiB" in proc.stderr and "smaller --size" in proc.stderr


def test_cli_no_rdma_devices(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_cli("ib", "--loopback", "--sysfs-root", str(tmp_path / "empty"), env=_fake_env(tmp_path, {}))
    assert proc.returncode == 2 and "no RDMA devices" in proc.stderr


def test_real_workers_over_gloo_measure_both_directions_and_verify(root, tmp_path):
    """Two real worker processes (python -m fabricbench.gpu.ib_worker) rendezvous, send/recv both ways, verify
    the received pattern and write their results; CPU tensors over gloo stand in for GPU buffers over NCCL.
    The NCCL log a real worker gets from NCCL is written by the test after they finish."""
    import socket as _socket

    with _socket.socket() as s:  # a free port for the workers' rendezvous
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]

    class Local(ib.Coordinator):
        master_port = free_port - 1  # the first NIC's workers use master_port + 1

    def spawn(jobs, timeout):
        for job in jobs:
            job.cmd += ["--backend", "gloo"]
        errors = ib.spawn_workers(jobs, timeout)
        for job in jobs:
            job.log.write_text((DATA / "gpu-nccl-ib-loopback-gdr.log").read_text().replace("mlx5_1:1", "mlx5_0:1"))
        return errors

    cfg = ib.IbConfig(hca="mlx5_0", loopback=True, size=1 << 16, iters=3, warmup=1, sysfs_root=str(root),
                      out_dir=str(tmp_path / "out"), timeout=90)
    rows = ib.run_ib(GPU_BUS, cfg, Local(), "node1", spawn=spawn, base_env=dict(os.environ))
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok", row["error"]
    assert row["nwrong"] == 0 and row["gbps"] > 0 and row["gbps_reverse"] > 0
    record = json.loads((tmp_path / "out" / "logs" / "ib-mlx5_0-1-rank0.json").read_text())
    assert record["ok"] and set(record["directions"]) == {"0->1", "1->0"}
    assert record["directions"]["0->1"]["bytes"] == (1 << 16) * 3
