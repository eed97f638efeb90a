"""The fabric lab (`fabricbench lab`): unit checks of its rendering, then real labs (root; marked `lab`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabricbench.errors import UsageError
from fabricbench.lab import plan as lab_plan
from fabricbench.lab import slurm_cluster, tc
from fabricbench.lab.topology import render_yaml, topology_dict
from lab_fixture import REPO, lab, lab_config, lab_factory, lab_unavailable  # noqa: F401  (fixtures)

pytestmark = pytest.mark.lab
GOODPUT = 0.955  # TCP payload per byte on the wire at MTU 1500 (1448/1516): what a probe sees of a tc rate


# ----------------------------------------------------------------------------------- no root needed

def test_rates_delays_losses_parse():
    assert tc.parse_rate("400mbit") == 400_000_000
    assert tc.parse_rate("1gbit") == 10**9
    assert tc.parse_rate("2.5G") == 2_500_000_000
    assert tc.parse_rate("60%", relative_to=400_000_000) == 240_000_000
    assert tc.parse_rate("none") is None
    assert tc.parse_delay("5ms") == 5000 and tc.parse_delay("250us") == 250
    assert tc.parse_loss("1%") == 1.0 and tc.parse_loss("0") is None
    for bad in ("fast", "400 parsecs", "-3mbit"):
        with pytest.raises(UsageError):
            tc.parse_rate(bad)
    with pytest.raises(UsageError, match="percentage"):
        tc.parse_rate("50%")
    with pytest.raises(UsageError):
        tc.parse_loss("150%")
    assert tc.format_rate(400_000_000) == "400mbit" and tc.format_rate(None) == "unlimited"


def test_tc_tree_for_nic_pair_and_loss():
    spec = tc.IfaceSpec(tc.Shape(400_000_000, None, 1.0), {"10.213.0.2": tc.Shape(100_000_000, None, 2.0)})
    cmds = [" ".join(c) for c in tc.commands_for("eth0", spec)]
    assert cmds[0] == "tc qdisc add dev eth0 root handle 1: htb default 10"
    assert any("classid 1:100 htb rate 100000000bit" in c for c in cmds)
    assert any("match ip dst 10.213.0.2/32 flowid 1:100" in c for c in cmds)
    assert any("pfifo limit 0" in c for c in cmds)  # the drop class
    assert sum("bpf bytecode" in c for c in cmds) == 2  # NIC loss (any destination) and the pair's own loss
    assert tc.render(tc.IfaceSpec()) == []  # a healthy uplink keeps the default qdisc
    # classic BPF: 4 instructions for a NIC-wide loss, 6 with the destination check; threshold = p * 2^32
    assert tc.loss_bytecode(50.0).startswith("4,32 0 0 4294963256,53 1 0 2147483648,")
    assert tc.loss_bytecode(1.0, "10.213.0.2").startswith("6,32 0 0 4293918736,21 0 3 181731330,")


def test_plan_spreads_nodes_over_leaves_and_renders_slurm_files(tmp_path):
    plan = lab_plan.make_plan(3, 7, 3, 300_000_000)
    assert [leaf.nodes for leaf in plan.leaves] == [["lab1", "lab2", "lab3"], ["lab4", "lab5"], ["lab6", "lab7"]]
    assert plan.node("lab5").addr == "10.213.3.5" and plan.ctl_addr == "10.213.3.253"
    assert plan.node("lab5").netns == "fbl3-lab5" and plan.leaves[1].bridge == "fbl3l2"
    assert all(len(name) <= 15 for leaf in plan.leaves for name in (leaf.bridge, leaf.uplink_leaf_if))
    with pytest.raises(UsageError, match="unknown node 'lab9'"):
        plan.node("lab9")
    with pytest.raises(UsageError):
        lab_plan.make_plan(0, 2, 3)  # more leaves than nodes
    topo = slurm_cluster.render_topology_conf(plan)
    assert "SwitchName=leaf1 Nodes=lab[1-3]" in topo and "SwitchName=spine Switches=leaf[1-3]" in topo
    conf = slurm_cluster.render_slurm_conf(plan, Path("/var/lib/x"))
    for line in ("SlurmctldHost=labctl(10.213.3.253)", "AuthType=auth/none", "CredType=cred/none",
                 "TopologyPlugin=topology/tree", "StateSaveLocation=/var/lib/x/ctld",
                 "NodeName=lab7 NodeAddr=10.213.3.7"):
        assert line in conf
    assert "/tmp" not in conf.replace("TmpFS=/tmp", "") and "/etc/slurm" not in conf
    hosts = lab_plan.hosts_file(plan)
    assert "10.213.3.1\tlab1" in hosts and "10.213.3.253\tlabctl" in hosts


def test_topology_yaml_follows_the_topology_schema():
    import yaml

    plan = lab_plan.make_plan(0, 6, 3, 400_000_000)
    data = yaml.safe_load(render_yaml(plan))
    assert data == topology_dict(plan)
    assert data["fabric"]["switches"][0] == {"name": "spine", "switches": ["leaf1", "leaf2", "leaf3"]}
    assert data["fabric"]["link_rate"] == "400 Mb/s"
    schema = pytest.importorskip("fabricbench.topology.schema")
    topo = schema.Topology.model_validate(data)
    assert topo.host_names() == [f"lab{i}" for i in range(1, 7)]


def test_oversubscribed_plan_records_uplink_capacity_in_the_topology():
    import yaml

    from fabricbench.lab.manager import parse_ratio

    assert parse_ratio("2:1") == 2.0 and parse_ratio("3") == 3.0 and parse_ratio("1.5:1") == 1.5
    for bad in ("fast", "1:2", "2:0", "100:1"):
        with pytest.raises(UsageError, match="--oversubscription"):
            parse_ratio(bad)
    plan = lab_plan.make_plan(0, 7, 3, 400_000_000, oversubscription=2.0)
    # leaf1 has 3 nodes (1200 Mbit/s of host links) -> 600 Mbit/s up; leaves of 2 nodes -> 400 Mbit/s
    assert [leaf.uplink_rate_bps for leaf in plan.leaves] == [600_000_000, 400_000_000, 400_000_000]
    data = yaml.safe_load(render_yaml(plan))
    leaves = {sw["name"]: sw for sw in data["fabric"]["switches"]}
    assert [leaves[f"leaf{j}"]["uplink_rate"] for j in (1, 2, 3)] == ["600 Mb/s", "400 Mb/s", "400 Mb/s"]
    assert "2:1 oversubscribed" in data["description"]
    schema = pytest.importorskip("fabricbench.topology.schema")
    schema.Topology.model_validate(data)
    assert "uplink_rate" not in str(topology_dict(lab_plan.make_plan(0, 6, 3, 400_000_000)))  # non-blocking
    assert {leaf.uplink_rate_bps for leaf in lab_plan.make_plan(0, 4, 2, None, uplink_rate_bps=10**8).leaves} \
        == {10**8}
    with pytest.raises(UsageError, match="shaped node links"):
        lab_plan.make_plan(0, 4, 2, None, oversubscription=2.0)


def test_nic_direction_picks_the_egress_that_carries_it():
    from fabricbench.lab.manager import nic_ifaces

    node = lab_plan.make_plan(2, 4, 2, 400_000_000).node("lab3")
    assert nic_ifaces(node, "tx") == [("fbl2-lab3", "eth0")]  # out of the node: its own eth0
    assert nic_ifaces(node, "rx") == [(None, "fbl2n3")]  # into it: the leaf bridge's port towards it
    assert nic_ifaces(node, "both") == [("fbl2-lab3", "eth0"), (None, "fbl2n3")]


def test_missing_slurm_daemons_say_how_to_install(monkeypatch):
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name, path=None: None)
    with pytest.raises(UsageError, match="apt-get install -y slurmctld slurmd slurm-client"):
        slurm_cluster.ensure_installed(install=False)


def test_state_dir_under_tmp_is_refused():
    from fabricbench.lab.state import resolve_state_dir

    with pytest.raises(UsageError, match="private /tmp"):
        resolve_state_dir("/tmp/lab")


def _cli(*args: str, env: dict | None = None, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "fabricbench", *args], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=REPO, **kw)


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fabricbench: error:"), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_cli_errors_without_a_lab(tmp_path):
    _one_line_error(_cli("lab", "status", "--state-dir", "/var/lib/fabricbench-lab-none"), "no lab in")
    _one_line_error(_cli("lab", "env", "--state-dir", "/var/lib/fabricbench-lab-none"), "no lab in")
    _one_line_error(_cli("lab", "up", "--nodes", "0", "--state-dir", "/var/lib/fabricbench-lab-none"), "--nodes 0")
    _one_line_error(_cli("lab", "up", "--state-dir", str(tmp_path)), "/tmp")
    _one_line_error(_cli("lab", "degrade", "--state-dir", "/var/lib/fabricbench-lab-none"), "target")


def test_not_root_is_one_line(monkeypatch, capsys):
    from fabricbench.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for args in (["lab", "up", "--nodes", "2", "--state-dir", "/var/lib/fabricbench-lab-x"],
                 ["lab", "down", "--state-dir", "/var/lib/fabricbench-lab-x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "needs root" in err[0], err
    assert not Path("/var/lib/fabricbench-lab-x").exists()


# ------------------------------------------------------------------------------------- real labs

def _leftovers(handle_dir: Path, lab_id: int) -> list[str]:
    """Everything a lab could leave behind: namespaces, links, processes, files."""
    from fabricbench.lab import netns

    prefix = lab_plan.prefix_for(lab_id)
    left = [f"netns {n}" for n in netns.list_netns(prefix + "-")]
    left += [f"link {x}" for x in netns.list_links(lab_plan.link_pattern(lab_id))]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                zombie = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            if str(handle_dir) in cmd and not zombie:
                left.append(f"process {entry}: {cmd[:80]}")
    if handle_dir.exists():
        left.append(f"dir {handle_dir}")
    return left


def test_four_node_lab_runs_slurm_jobs(lab):
    assert lab.up_seconds < 15, f"lab up took {lab.up_seconds:.1f} s"
    out = lab.srun("-N4", "hostname", check=True)
    assert sorted(out.stdout.split()) == ["lab1", "lab2", "lab3", "lab4"]
    # every node has its own address, hostname, /etc/hosts and /tmp; the checkout is importable there
    out = lab.srun("-N4", "sh", "-c", "echo $(hostname) $(getent hosts $(hostname) | cut -d' ' -f1) "
                   "$(ls -A /tmp | grep -c pmix-probe); touch /tmp/pmix-probe", check=True)
    rows = sorted(line.split() for line in out.stdout.strip().splitlines())
    assert rows == [[f"lab{i}", lab.addrs[f"lab{i}"], "0"] for i in range(1, 5)]
    status = lab.fabricbench("lab", "status", "--json")
    info = json.loads(status.stdout)
    assert [n["slurm"] for n in info["nodes"]] == ["idle"] * 4
    assert info["leaves"] == {"leaf1": ["lab1", "lab2"], "leaf2": ["lab3", "lab4"]}
    env = lab.fabricbench("lab", "env")
    assert f"export SLURM_CONF={lab.slurm_conf}" in env.stdout
    assert (lab.state_dir / "topology.conf").read_text().count("SwitchName=") == 3
    _one_line_error(lab.fabricbench("lab", "up", "--nodes", "2"), "already up")
    _one_line_error(lab.fabricbench("lab", "degrade", "--nic", "lab9", "--rate", "100mbit"), "unknown node 'lab9'")


def test_gloo_all_reduce_across_two_nodes(lab):
    out_dir = lab.shared_dir / "gloo"
    proc = lab.srun("-N2", "--ntasks-per-node=1", sys.executable, "-m", "fabricbench", "run", "all_reduce",
                    "--backend", "gloo", "-b", "1M", "-e", "1M", "-n", "5", "-w", "1", "--out", str(out_dir),
                    timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out_dir / "run.json").read_text())
    assert sorted(run["hosts"]) == ["lab1", "lab2"]
    assert "2 ranks on 2 hosts" in proc.stdout


def test_mpi4py_over_pmix_across_two_nodes(lab):
    pytest.importorskip("mpi4py")
    code = ("from mpi4py import MPI; import socket; c = MPI.COMM_WORLD; "
            "print(c.Get_rank(), c.Get_size(), socket.gethostname(), c.allreduce(c.Get_rank() + 1))")
    proc = lab.srun("-N2", "--mpi=pmix", sys.executable, "-c", code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = sorted(line.split() for line in proc.stdout.strip().splitlines())
    assert rows == [["0", "2", "lab1", "3"], ["1", "2", "lab2", "3"]]


def test_throughput_follows_link_rate_and_degradations(lab):
    rate = lab.link_rate_bps
    try:
        base = lab.throughput("lab1", "lab2")
        assert 0.85 * GOODPUT * rate < base < 1.05 * rate, base
        lab.degrade(nic="lab1", rate="60%")
        out, back = lab.throughput("lab1", "lab2"), lab.throughput("lab2", "lab1")
        for value in (out, back):  # both directions of lab1's NIC
            assert 0.85 * GOODPUT * 0.6 * rate < value < 1.05 * 0.6 * rate, (value, base)
        lab.degrade(pair=("lab3", "lab4"), rate="200mbit")  # one direction only
        assert lab.throughput("lab3", "lab4") < 1.05 * 200e6
        assert lab.throughput("lab4", "lab3") > 0.85 * GOODPUT * rate
        lab.heal(nic="lab1")
        assert lab.throughput("lab1", "lab2") > 0.85 * GOODPUT * rate
        assert len(lab.status()["degradations"]) == 1
    finally:
        lab.heal()
    assert lab.status()["degradations"] == []


def test_nic_degraded_in_one_direction_only(lab):
    rate = lab.link_rate_bps
    try:
        lab.degrade(nic="lab2", rate="50%", direction="rx")
        into, out_of = lab.throughput("lab1", "lab2"), lab.throughput("lab2", "lab1")
        # into lab2: half the link (never above it: tc's limit); out of lab2: the full link. Bounds leave room
        # for a busy 2-core machine, where a probe can fall short of the tc rate.
        assert 0.7 * GOODPUT * 0.5 * rate < into < 1.05 * 0.5 * rate, (into, out_of)
        assert out_of > 0.75 * GOODPUT * rate and into < 0.6 * out_of, (into, out_of)
        deg = lab.status()["degradations"]
        assert [(d["kind"], d["target"], d["direction"]) for d in deg] == [("nic", "lab2", "rx")]
        lab.degrade(nic="lab2", rate="50%", direction="tx")  # replaces the rx one
        into, out_of = lab.throughput("lab1", "lab2"), lab.throughput("lab2", "lab1")
        assert into > 0.75 * GOODPUT * rate and out_of < 1.05 * 0.5 * rate, (into, out_of)
        assert len(lab.status()["degradations"]) == 1
    finally:
        lab.heal()
    bad = lab.fabricbench("lab", "degrade", "--nic", "lab2", "--direction", "up", "--rate", "50%")
    assert bad.returncode == 2 and "--direction up: choose rx" in bad.stderr and "Traceback" not in bad.stderr
    bad = lab.fabricbench("lab", "degrade", "--uplink", "leaf1", "--direction", "rx", "--rate", "50%")
    assert bad.returncode == 2 and "--direction is for --nic" in bad.stderr


def test_loss_and_node_crash(lab):
    try:
        lab.degrade(nic="lab2", loss="5%")
        lossy = lab.throughput("lab2", "lab1")
        assert lossy < 0.5 * lab.link_rate_bps, lossy  # per-packet 5 % loss cripples TCP
    finally:
        lab.heal()
    assert lab.kill_node("lab4") >= 1
    assert lab.status()["nodes"][3]["slurmd_pid"] is None
    lab.start_node("lab4")
    out = lab.srun("-N1", "-w", "lab4", "hostname", check=True)
    assert out.stdout.strip() == "lab4"


def test_three_leaves_uplink_degrade_and_clean_down(lab_factory):
    handle = lab_factory(nodes=6, leaves=3, link_rate="300mbit")
    assert handle.leaves == {"leaf1": ["lab1", "lab2"], "leaf2": ["lab3", "lab4"], "leaf3": ["lab5", "lab6"]}
    out = handle.srun("-N6", "hostname", check=True)
    assert sorted(out.stdout.split()) == [f"lab{i}" for i in range(1, 7)]
    handle.degrade(uplink="leaf2", rate="100mbit")
    assert handle.throughput("lab1", "lab3") < 1.05 * 100e6  # crosses leaf2's uplink
    assert handle.throughput("lab1", "lab5") > 0.85 * GOODPUT * 300e6  # leaf1 -> spine -> leaf3: untouched
    assert handle.throughput("lab1", "lab2") > 0.85 * GOODPUT * 300e6  # inside leaf1
    # a job still running at `down` is killed with its node
    sleeper = subprocess.Popen(["srun", "-N2", "sleep", "60"], env=handle.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {"mixed", "allocated"} & {n["slurm"] for n in handle.status()["nodes"]}:
            time.sleep(0.2)
        state_dir, lab_id = handle.state_dir, handle.lab_id
        handle.down()
        assert _leftovers(state_dir, lab_id) == []
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)


def test_oversubscribed_uplinks_are_shared_by_cross_leaf_flows(lab_factory):
    from concurrent.futures import ThreadPoolExecutor

    handle = lab_factory(nodes=4, leaves=2, link_rate="400mbit", oversubscription="2:1")
    assert {leaf: rate for leaf, rate in handle.status()["uplink_rate_bps"].items()} == \
        {"leaf1": 400_000_000, "leaf2": 400_000_000}
    assert "uplink_rate: 400 Mb/s" in handle.topology_yaml.read_text()
    alone = handle.throughput("lab1", "lab3")
    assert alone > 0.85 * GOODPUT * 400e6, alone  # one flow fits the uplink
    with ThreadPoolExecutor(2) as pool:  # two flows leave leaf1 at once: they share its 400 Mbit/s
        flows = [pool.submit(handle.throughput, a, b, 1.5) for a, b in (("lab1", "lab3"), ("lab2", "lab4"))]
        shared = [f.result() for f in flows]
    # TCP does not split a bottleneck evenly (one flow may start first), so: each clearly below its rate alone,
    # together about the uplink's rate and never above it
    assert all(bps < 0.75 * alone for bps in shared), (alone, shared)
    assert 0.7 * 400e6 < sum(shared) < 1.05 * 400e6, shared
    handle.degrade(uplink="leaf2", rate="50%")  # of the uplink's own 400 Mbit/s
    assert handle.throughput("lab1", "lab3") < 1.05 * 200e6


def test_down_after_a_crashed_up_removes_everything():
    why = lab_unavailable()
    if why:
        pytest.skip(why)
    state_dir = Path(f"/var/lib/fabricbench-lab-pytest-{os.getpid()}-crash")
    proc = subprocess.Popen([sys.executable, "-m", "fabricbench", "lab", "up", "--nodes", "3", "--leaves", "3",
                             "--state-dir", str(state_dir)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (state_dir / "slurm.conf").exists():  # killed half-way through
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = json.loads((state_dir / "state.json").read_text())
    first = _cli("lab", "down", "--state-dir", str(state_dir))
    assert first.returncode == 0, first.stderr
    again = _cli("lab", "down", "--state-dir", str(state_dir))
    assert again.returncode == 0 and "nothing to remove" in again.stdout
    assert _leftovers(state_dir, state["lab_id"]) == []
