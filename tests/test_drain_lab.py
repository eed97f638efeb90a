"""Drain attacks against the lab's real slurmctld (issue 10): host lists in results files, hosts without
measurements, reasons that look owned but are not, and printed commands piped to a shell."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fabricbench.slurm import nodes
from lab_fixture import lab, lab_config  # noqa: F401  (fixtures)

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lab_config():
    return {"nodes": 4, "leaves": 1, "link_rate": "400mbit"}


def scontrol(lab, *args):
    return lab.run(["scontrol", *args], check=True)


def info(lab, node):
    env_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(lab.slurm_conf)
    try:
        return nodes.node_info(node)
    finally:
        if env_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = env_conf


@pytest.fixture
def clean(lab):
    """Every lab node idle with no reason before and after the test; lab3 carries another team's drain."""
    def reset():
        for n in lab.nodes:
            lab.run(["scontrol", "update", f"NodeName={n}", "State=RESUME"])
    reset()
    scontrol(lab, "update", "NodeName=lab3", "State=DRAIN", "Reason=maint: bios")
    yield
    reset()


def simulated(tmp_path, rename: dict[str, str], faults=("nic:node0003:0.5",), extra_hosts=()) -> Path:
    """A sweep from `simulate` (8 nodes) with its host names replaced, as a hostile results file would be."""
    out = tmp_path / "sim"
    args = ["simulate", "--out", str(out), "--nodes", "8", "--leaves", "2", "--repeats", "2", "--seed", "1"]
    for f in faults:
        args += ["--fault", f]
    subprocess.run([sys.executable, "-m", "fabricbench", *args], check=True, capture_output=True, cwd=REPO)
    frame = pd.read_parquet(out / "results.parquet")
    for col in ("node_a", "node_b"):
        frame[col] = frame[col].map(lambda h: rename.get(h, h))
    frame.to_parquet(out / "results.parquet", index=False)
    run = json.loads((out / "run.json").read_text())
    run["hosts"] = [rename.get(h, h) for h in run["hosts"]] + list(extra_hosts)
    run.pop("simulation", None)
    (out / "run.json").write_text(json.dumps(run))
    return out


def states(lab):
    """Drained or not, and the reason, per node (slurmd's transient NOT_RESPONDING flag is not compared)."""
    return {n: ("DRAIN" in i.states, i.reason) for n in lab.nodes for i in [info(lab, n)]}


def drain_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# fabricbench drain"))
    return lines[start:]


@pytest.mark.parametrize("hostile", ["lab[1-4]", "lab3,lab4", "lab3 lab4", "lab[3-4]"])
def test_host_list_in_results_drains_nothing(lab, clean, tmp_path, hostile):
    results = simulated(tmp_path, {"node0001": "lab1", "node0002": "lab2", "node0003": hostile, "node0004": "lab4"})
    before = states(lab)
    res = lab.fabricbench("analyze", str(results), "--drain", "--apply")
    assert res.returncode == 1, res.stdout + res.stderr
    section = drain_lines(res.stdout)
    assert any(line.startswith("# skipped ") and "not one plain node name" in line for line in section), section
    assert not any(line.startswith("scontrol") for line in section), section
    assert states(lab) == before
    assert info(lab, "lab3").reason == "maint: bios"


def test_hosts_listed_without_measurements_never_drain(lab, clean, tmp_path):
    # lab1 and lab2 are in run.json only: the analyzer reports them missing (0.80), drain refuses them
    results = simulated(tmp_path, {}, faults=(), extra_hosts=("lab1", "lab2"))
    res = lab.fabricbench("analyze", str(results), "--drain", "--apply", "--drain-confidence", "0.5")
    assert "lab1 was in the run" in res.stdout  # the verdict is still reported
    assert not any(line.startswith("scontrol") for line in drain_lines(res.stdout))
    assert not info(lab, "lab1").reason and not info(lab, "lab2").reason
    # a measured lab host with a fault of its own does drain (the control that shows the path works)
    results = simulated(tmp_path / "b", {"node0002": "lab2"}, faults=("nic:node0002:0.5",))
    res = lab.fabricbench("analyze", str(results), "--drain", "--apply")
    assert nodes.owned(info(lab, "lab2").reason), res.stdout
    assert "DRAIN" in info(lab, "lab2").states
    assert info(lab, "lab3").reason == "maint: bios"


@pytest.mark.parametrize("theirs", ["  Foo=bar fabricbench:{auto} nic lab3", "fabricbench: alice, new cable",
                                    "Reason=fabricbench:{auto} x", " fabricbench:{auto} x",
                                    "State=IDLE Reason=fabricbench:{auto}", "FABRICBENCH:{auto} x"])
def test_someone_elses_reason_is_never_overwritten(lab, clean, tmp_path, theirs):
    scontrol(lab, "update", "NodeName=lab3", "State=DRAIN", f"Reason={theirs}")
    assert info(lab, "lab3") is None or info(lab, "lab3").reason == theirs  # read back exactly, or doubt
    results = simulated(tmp_path, {"node0003": "lab3"})
    res = lab.fabricbench("analyze", str(results), "--drain", "--apply")
    assert "# skipped lab3" in res.stdout, res.stdout
    shown = lab.run(["scontrol", "show", "node", "lab3"]).stdout
    assert f"Reason={theirs} [" in shown
    # resume refuses too
    os.environ["SLURM_CONF"] = str(lab.slurm_conf)
    try:
        assert nodes.resume("lab3", apply=True, echo=lambda _: None).action == "skipped"
    finally:
        os.environ.pop("SLURM_CONF", None)
    assert f"Reason={theirs} [" in lab.run(["scontrol", "show", "node", "lab3"]).stdout


def logging_scontrol(tmp_path) -> tuple[dict, Path]:
    """A `scontrol` first on PATH that logs its argv, then runs the real one."""
    bindir, log = tmp_path / "bin", tmp_path / "calls.log"
    bindir.mkdir()
    real = subprocess.run(["which", "scontrol"], capture_output=True, text=True, check=True).stdout.strip()
    script = bindir / "scontrol"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                      f"os.execv({real!r}, [{real!r}] + sys.argv[1:])\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, log


PAYLOADS = ["$(touch {m}1)", "`touch {m}2`", "; touch {m}3", "\ntouch {m}4\n", "' ; touch {m}5 '", '" ; touch {m}6 "']


def test_printed_commands_piped_to_sh_run_one_scontrol_per_node(lab, clean, tmp_path):
    marker = tmp_path / "pwned"
    hostile = {f"node000{i + 4}": "lab" + p.format(m=marker) for i, p in enumerate(PAYLOADS[:4])}
    results = simulated(tmp_path, {"node0002": "lab2", **hostile},
                        faults=("nic:node0002:0.4",) + tuple(f"nic:{h}:0.5" for h in list(hostile)[:3]))
    env, log = logging_scontrol(tmp_path)
    res = lab.fabricbench("analyze", str(results), "--drain")  # printed only
    section = "\n".join(drain_lines(res.stdout)) + "\n"
    assert not log.exists() or all('"show"' in line for line in log.read_text().splitlines())
    log.unlink(missing_ok=True)
    sh = subprocess.run(["sh"], input=section, capture_output=True, text=True, env={**lab.env, **env}, timeout=60,
                        cwd=tmp_path)
    assert sh.returncode == 0, sh.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [["update", "NodeName=lab2", "State=DRAIN", calls[0][3]]], calls
    assert calls[0][3].startswith("Reason=" + nodes.OWNED_PREFIX + " nic lab2")
    assert not list(tmp_path.glob("pwned*"))
    assert "DRAIN" in info(lab, "lab2").states and info(lab, "lab3").reason == "maint: bios"


def test_reason_with_shell_syntax_reaches_slurm_literally(lab, clean, tmp_path):
    marker = "pwned"  # relative: sh runs in tmp_path
    reason = nodes.OWNED_PREFIX + " " + " ".join(p.format(m=marker) for p in PAYLOADS if "\n" not in p and '"' not in p)
    printed: list[str] = []
    os.environ["SLURM_CONF"] = str(lab.slurm_conf)
    try:
        out = nodes.drain("lab1", reason, apply=False, echo=printed.append, measured_hosts={"lab1"})
        with pytest.raises(Exception, match="printable"):
            nodes.drain("lab1", reason + "\ntouch x", apply=False, echo=printed.append, measured_hosts={"lab1"})
        with pytest.raises(Exception, match="printable"):  # scontrol would strip the quotes: never stored as written
            nodes.drain("lab1", reason + ' "x"', apply=False, echo=printed.append, measured_hosts={"lab1"})
    finally:
        os.environ.pop("SLURM_CONF", None)
    assert out.action == "would-drain" and len(printed) == 1
    env, log = logging_scontrol(tmp_path)
    sh = subprocess.run(["sh"], input=printed[0] + "\n", capture_output=True, text=True, env={**lab.env, **env},
                        cwd=tmp_path)
    assert sh.returncode == 0, sh.stderr
    assert len(log.read_text().splitlines()) == 1
    assert info(lab, "lab1").reason == reason  # stored verbatim, nothing ran
    assert not list(tmp_path.glob("pwned*"))
    # ours now: resume lifts it, and only it
    os.environ["SLURM_CONF"] = str(lab.slurm_conf)
    try:
        assert nodes.resume("lab1", apply=True, echo=printed.append).action == "resumed"
        assert nodes.resume("lab3", apply=True, echo=printed.append).action == "skipped"
    finally:
        os.environ.pop("SLURM_CONF", None)
    assert not info(lab, "lab1").reason and info(lab, "lab3").reason == "maint: bios"
