"""`fabricbench health run` against the lab's real slurmctld (issue 12, "Shown by"): six nodes on three leaves, five
runs with faults changed between them; the same steps as benchmarks/health_lab_scenario.sh, with assertions."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab_fixture import lab, lab_config  # noqa: F401  (fixtures)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab_config():
    return {"nodes": 6, "leaves": 3, "link_rate": "400mbit"}


def _node(lab, name: str) -> tuple[str, str]:
    out = lab.run(["scontrol", "show", "node", "-o", name], check=True).stdout
    state = re.search(r" State=(\S+)", out).group(1)
    reason = re.search(r" Reason=(.*?) \[", out)
    return state, reason.group(1) if reason else ""


def test_five_runs_regress_drain_resume(lab, tmp_path):
    work = lab.shared_dir / "health-test"
    hist = work / "history"
    lab.run(["scontrol", "update", "NodeName=lab6", "State=DRAIN", "Reason=maint: bios"], check=True)

    def run(i: int):
        res = lab.fabricbench("health", "run", "--nodelist", ",".join(lab.nodes), "--budget", "5m", "--history",
                              str(hist), "--textfile", str(work / "prom"), "--topology", str(lab.topology_yaml),
                              "--drain", "--drop", "0.25", "-b", "512K", "-e", "512K", "-n", "3",
                              "--no-collectives",  # the NIC lifecycle only (collectives: test_health_collectives_lab.py)
                              "--out", str(work / f"run{i}"), timeout=240)
        assert res.returncode in (0, 1, 3), res.stdout + res.stderr
        assert "not swept: lab6 is DRAIN" in res.stdout  # someone else's drain: left out, left alone
        return res

    def nic_states():
        con = lab.fabricbench("health", "query", "--history", str(hist), "--format", "json",
                              "SELECT component, metric, state, first_seen_run, run_id FROM states WHERE run_ts = "
                              "(SELECT max(run_ts) FROM states) AND component_kind = 'nic'")
        assert con.returncode == 0, con.stderr
        return json.loads(con.stdout)

    r1, r2 = run(1), run(2)
    assert "plan: 5 nodes, all 10 pairs (circle, 5 rounds)" in r1.stdout and "estimate:" in r1.stdout
    assert "spent:" in r2.stdout
    lab.degrade(nic="lab3", rate="60%")
    r3 = run(3)
    lab3 = [s for s in nic_states() if s["component"].startswith("lab3/")]
    assert lab3 and all(s["state"] == "suspect" and s["first_seen_run"] == s["run_id"] for s in lab3), (lab3, r3.stdout)
    others = [s for s in nic_states() if not s["component"].startswith("lab3/")]
    assert all(s["state"] in ("ok", "recovered") for s in others), others
    run3_id = lab3[0]["run_id"]
    assert _node(lab, "lab3")[1] == ""  # one low night never drains

    r4 = run(4)
    lab3 = [s for s in nic_states() if s["component"].startswith("lab3/")]
    assert all(s["state"] == "regressed" and s["first_seen_run"] == run3_id for s in lab3), (lab3, r4.stdout)
    state, reason = _node(lab, "lab3")
    assert "DRAIN" in state and reason.startswith("fabricbench:{auto} fabric: NIC lab3/"), (state, reason, r4.stdout)
    assert r4.returncode == 1

    lab.heal()
    r5 = run(5)
    assert "retest of nodes fabricbench drained: lab3" in r5.stdout and "Flags=MAINT,IGNORE_JOBS" in r5.stdout
    state, reason = _node(lab, "lab3")
    assert "DRAIN" not in state and reason == "", (state, reason, r5.stdout)
    assert all(s["state"] == "recovered" for s in nic_states() if s["component"].startswith("lab3/"))
    assert "No reservations" in lab.run(["scontrol", "show", "reservation"]).stdout
    assert _node(lab, "lab6") == ("IDLE+DRAIN", "maint: bios")

    fams = {f.name: f for f in text_string_to_metric_families((work / "prom" / "fabricbench_health.prom").read_text())}
    nic = {(s.labels["node"], s.labels["direction"]) for s in fams["fabricbench_health_nic_bandwidth_bytes_per_second"].samples}
    assert ("lab3", "tx") in nic and ("lab6", "tx") not in nic
    rep = lab.fabricbench("health", "report", "--history", str(hist), "--out", str(work / "report.html"))
    assert rep.returncode in (0, 3), rep.stdout + rep.stderr
    page = (work / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6 and "lab3/nic" in page


def _tree(root, gpus: int):
    from test_health_checks import _dev, _port

    for i in range(gpus):
        _dev(root, f"0000:{0x18 + i:02x}:00.0", "0x10de", "0x030200")
    for i, ca in enumerate(["mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"]):
        _port(root, ca, _dev(root, f"0000:{0x40 + i:02x}:00.0", "0x15b3", "0x020700"))
    return root


def test_node_check_drains_and_resumes_only_its_own(lab, tmp_path):
    bad, good = _tree(tmp_path / "bad", 7), _tree(tmp_path / "good", 8)

    def node(name, tree):
        return lab.fabricbench("health", "node", "--quick", "--no-live", "--node", name, "--sysfs-root", str(tree),
                               "--topology", "dgx-h100", "--check", "gpus", "--check", "pcie", "--check", "ports",
                               "--state-dir", str(tmp_path / "st"), "--drain", timeout=60)

    res = node("lab2", bad)
    assert res.returncode == 1, res.stdout + res.stderr
    state, reason = _node(lab, "lab2")
    assert "DRAIN" in state and reason.startswith("fabricbench:{auto} check: gpus: 7 GPU(s)"), (state, reason)
    res = node("lab2", good)
    assert res.returncode == 0 and "State=RESUME" in res.stdout, res.stdout
    assert _node(lab, "lab2")[1] == ""
    lab.run(["scontrol", "update", "NodeName=lab1", "State=DRAIN", "Reason=maint: bios"], check=True)
    node("lab1", bad)  # someone else's reason: not overwritten
    assert _node(lab, "lab1") == ("IDLE+DRAIN", "maint: bios")
    node("lab1", good)  # and not resumed
    assert _node(lab, "lab1") == ("IDLE+DRAIN", "maint: bios")


def test_schedule_installs_into_the_labs_scrontab(lab):
    import shutil

    if shutil.which("scrontab") is None:
        res = lab.fabricbench("health", "schedule", "--install", "--", "--budget", "5m")
        assert res.returncode == 2 and "scrontab is not on PATH" in res.stderr and "Traceback" not in res.stderr
        pytest.skip("scrontab is not installed here (Debian's slurm-client ships no scrontab binary)")
    lab.run(["scrontab", "-r"], timeout=30)  # start from an empty table (ignore 'no crontab')
    other = lab.shared_dir / "other.scrontab"
    other.write_text("#SCRON --time=5\n30 3 * * * /bin/true\n")
    lab.run(["scrontab", str(other)], check=True, timeout=30)
    for _ in range(2):  # installing twice keeps one block and the user's own entry
        res = lab.fabricbench("health", "schedule", "--install", "--", "--nodelist", ",".join(lab.nodes), "--budget", "5m")
        assert res.returncode == 0, res.stdout + res.stderr
    table = lab.run(["scrontab", "-l"], check=True, timeout=30).stdout
    assert table.count("# BEGIN fabricbench health") == 1 and "30 3 * * * /bin/true" in table
    assert "-m fabricbench health run --nodelist" in table
    lab.run(["scrontab", "-r"], timeout=30)
