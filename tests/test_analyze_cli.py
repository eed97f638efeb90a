"""`fabricbench analyze` / `fabricbench simulate` end to end: formats, exit codes, criteria, drain, baseline, topology."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from fabricbench.cli import main
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


def cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "faulty"
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--out", str(out), "--nodes", "24", "--leaves", "4", "--gpus", "4", "--seed", "3",
              "--repeats", "2", "--fault", "nic:node0003:0.7", "--fault", "uplink:leaf2:0.75",
              "--fault", "gpu:node0020/1:0.5"])
    assert exc.value.code == 0
    return out


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "healthy"
    with pytest.raises(SystemExit):
        main(["simulate", "--out", str(out), "--nodes", "24", "--leaves", "4", "--seed", "4", "--repeats", "2"])
    return out


def leaves_yaml(tmp_path, nodes=24, leaves=4):
    per = nodes // leaves
    doc = "leaves:\n" + "".join(
        f"  leaf{k + 1}: [{', '.join(f'node{i + 1:04d}' for i in range(k * per, (k + 1) * per))}]\n" for k in range(leaves))
    p = tmp_path / "fabric.yaml"
    p.write_text(doc + "spines: [spine1]\nexpected_gbps: {intra-leaf: 47, inter-leaf: 45}\n")
    return p


def test_simulate_writes_normal_results(faulty):
    from fabricbench.results import read_results

    frame = read_results(faulty)
    pairs = frame[frame["row_kind"] == "pair"]
    assert set(pairs["direction"]) == {"a->b", "b->a"}
    assert pairs["algbw_gbps"].notna().all() and pairs["latency_us"].notna().all() and pairs["round"].notna().all()
    assert (frame["row_kind"] == "gpu_pair").sum() == 24 * 4 * 3
    info = json.loads((faulty / "run.json").read_text())
    assert len(info["hosts"]) == 24 and info["simulation"]["faults"][0]["kind"] == "nic"


def test_text_report_and_exit_1(capsys, faulty, tmp_path):
    code, out, _ = cli(capsys, "analyze", str(faulty), "--topology", str(leaves_yaml(tmp_path)))
    assert code == 1
    assert "FAULTS" in out and "node0003" in out and "leaf2" in out and "node0020:GPU1" in out


def test_healthy_exit_0(capsys, healthy, tmp_path):
    code, out, _ = cli(capsys, "analyze", str(healthy), "--topology", str(leaves_yaml(tmp_path)))
    assert code == 0, out
    assert "HEALTHY" in out and "No faulty component" in out


def test_json_report_is_a_baseline(capsys, faulty, healthy, tmp_path):
    report = tmp_path / "v.json"
    code, out, _ = cli(capsys, "analyze", str(healthy), "--format", "json", "--out", str(report))
    assert code == 0 and f"wrote {report}" in out
    doc = json.loads(report.read_text())
    assert doc["status"] == "healthy" and doc["fleet"] and doc["node_levels"]
    code, out, _ = cli(capsys, "analyze", str(faulty), "--baseline", str(report), "--format", "json")
    doc = json.loads(out)
    assert code == 1
    kinds = {(v["kind"], v["component"]) for v in doc["verdicts"]}
    assert ("nic", "node0003") in kinds
    assert all(set(v) >= {"component", "kind", "severity", "confidence", "evidence", "retest", "identifiers"}
               for v in doc["verdicts"])


def test_baseline_regression_is_a_cluster_finding(capsys, tmp_path):
    base, now = tmp_path / "b", tmp_path / "n"
    for out, noise_seed in ((base, "1"), (now, "2")):
        with pytest.raises(SystemExit):
            main(["simulate", "--out", str(out), "--nodes", "12", "--leaves", "3", "--seed", noise_seed])
    # the whole fleet 10% slower now: nothing stands out within the run, the baseline catches it
    from fabricbench.results import read_results, write_results

    frame = read_results(now)
    frame["algbw_gbps"] = frame["algbw_gbps"] * 0.9
    write_results(now, frame, json.loads((now / "run.json").read_text()))
    code, out, _ = cli(capsys, "analyze", str(now), "--baseline", str(base), "--format", "md")
    assert code == 1 and "baseline" in out and "regression" in out


def test_md_html_junit(capsys, faulty, tmp_path):
    code, out, _ = cli(capsys, "analyze", str(faulty), "--format", "md")
    assert code == 1 and out.startswith("# fabricbench analyze: faults") and "| nic | node0003 |" in out
    html_file = tmp_path / "r.html"
    code, _, _ = cli(capsys, "analyze", str(faulty), "--format", "html", "--out", str(html_file),
                     "--topology", str(leaves_yaml(tmp_path)))
    page = html_file.read_text()
    # measured vs expected as a picture; pair and GPU matrices as coloured tables (a picture past 64 hosts)
    assert page.count("data:image/png;base64,") >= 1 and page.count("<table class='matrix") >= 2
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert "Pair matrix" in page and "GPU x GPU" in page and "Measured vs expected" in page
    code, out, _ = cli(capsys, "analyze", str(faulty), "--format", "junit")
    root = ET.fromstring(out.split("\n", 1)[1] if out.startswith("<?xml") else out)
    assert root.tag == "testsuite" and int(root.get("failures")) >= 3
    names = {c.get("name"): c for c in root.iter("testcase")}
    assert names["node0003"].find("failure") is not None and names["node0001"].find("failure") is None


def test_criteria_per_node_and_cluster(capsys, faulty, tmp_path):
    crit = tmp_path / "c.yaml"
    crit.write_text("thresholds: {fleet_fraction: 0.93}\n"
                    "tests:\n"
                    "  - {name: gpus, kinds: [gpu, nvlink]}\n"
                    "  - {name: floor, min_gbps: 20}\n")
    code, out, _ = cli(capsys, "analyze", str(faulty), "--criteria", str(crit), "--format", "json")
    doc = json.loads(out)
    assert code == 1
    c = doc["criteria"]
    assert c["cluster"]["tests"]["gpus"]["pass"] is False and c["cluster"]["tests"]["floor"]["pass"] is True
    assert c["nodes"]["node0020"]["pass"] is False and c["nodes"]["node0003"]["pass"] is True
    crit.write_text("tests:\n  - {name: floor, min_gbps: 45}\n")
    code, out, _ = cli(capsys, "analyze", str(faulty), "--criteria", str(crit), "--format", "json")
    doc = json.loads(out)
    assert doc["criteria"]["nodes"]["node0003"]["pass"] is False  # 70% of ~48 GB/s
    crit.write_text("tests:\n  - {name: x, kinds: [cable]}\n")
    code, _, err = cli(capsys, "analyze", str(faulty), "--criteria", str(crit))
    assert code == 2 and "kinds" in err and "Traceback" not in err


@pytest.mark.parametrize("args, needle", [
    (["analyze", "/nonexistent/dir"], "no such file"),
    (["analyze", "{faulty}", "--format", "pdf"], "--format"),
    (["analyze", "{faulty}", "--apply"], "--drain"),
    (["analyze", "{faulty}", "--topology", "/nonexistent.yaml"], "topology"),
    (["simulate", "--out", "{tmp}/x", "--fault", "nic:nodeZZ:0.5"], "no such node"),
    (["simulate", "--out", "{tmp}/x", "--sizes", "big"], "--sizes"),
    (["simulate", "--out", "{tmp}/x", "--retest-rounds", "-1"], "--retest-rounds"),
])
def test_bad_input_exit_2_one_line(capsys, faulty, tmp_path, args, needle):
    args = [a.format(faulty=faulty, tmp=tmp_path) for a in args]
    code, out, err = cli(capsys, *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_simulate_runs_the_sweeps_retest_as_sweep_pairwise_does(capsys, tmp_path):
    """`simulate --retest-rounds K`: the sweep, its analysis, then the paths that analysis blames or cannot clear
    run K more rounds each (phase retest), and `analyze` judges them on those rounds."""
    from fabricbench.results import read_results

    out = tmp_path / "two-stage"
    code, text, _ = cli(capsys, "simulate", "--out", str(out), "--nodes", "48", "--leaves", "6", "--noise", "0.18",
                        "--heavy-tails", "--repeats", "2", "--seed", "11", "--fault", "pair:node0007->node0031:0.5",
                        "--retest-rounds", "4")
    assert code == 0 and "retest: 64 suspect path(s) in 4 more round(s)" in text
    frame = read_results(out)
    again = frame[frame["phase"] == "retest"]
    assert len(again[["node_a", "node_b"]].drop_duplicates()) <= 64
    assert ((again["node_a"] == "node0007") & (again["node_b"] == "node0031")
            | (again["node_a"] == "node0031") & (again["node_b"] == "node0007")).any()
    code, text, _ = cli(capsys, "analyze", str(out), "--format", "json")
    doc = json.loads(text)
    assert code == 1 and [v["component"] for v in doc["verdicts"] if v["confidence"] >= 0.5] == ["node0007->node0031"]
    assert any("ran again in its retest" in n for n in doc["notes"])


def test_inconclusive_exit_3(capsys, tmp_path):
    from fabricbench.results import write_results

    out = tmp_path / "one"
    write_results(out, [dict(row_kind="pair", node_a="a", node_b="b", direction="a->b", size_bytes=1 << 30,
                             algbw_gbps=40.0, status="ok")], {"hosts": ["a", "b"]})
    code, text, _ = cli(capsys, "analyze", str(out))
    assert code == 3 and "inconclusive" in text


def test_tool_outputs_mixed(capsys, fixtures_dir):
    code, out, _ = cli(capsys, "analyze", str(fixtures_dir / "nccl-tests" / "allreduce-gh200-2node-1gpu-v2.18.2-sarus-cscs.txt"),
                       str(fixtures_dir / "nvbandwidth" / "h100x8-d2d-read-ce-v0.4-azure-nd-h100-v5.txt"),
                       str(REPO / "tests" / "data" / "analyze-nccl-tests.json"), "--format", "json")
    doc = json.loads(out)
    assert code == 1  # the JSON sample has #wrong 3: a wrong-data verdict
    wrong = [v for v in doc["verdicts"] if "wrong data" in v["summary"]]
    assert wrong and wrong[0]["severity"] == "critical"
    assert doc["counts"]["gpus"] == 56 and doc["counts"]["groups"] >= 16


def fake_scontrol(tmp_path, reasons: dict[str, str]) -> tuple[dict, Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "scontrol.log"
    states = tmp_path / "states.json"
    states.write_text(json.dumps(reasons))
    script = bindir / "scontrol"
    script.write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
reasons = json.load(open({str(states)!r}))
if args[:1] == ["--json"]:  # Slurm 22.05's scontrol
    sys.exit("scontrol: unrecognized option '--json'")
if args[:3] == ["show", "node", "-o"]:
    r = reasons.get(args[3])
    state = "IDLE+DRAIN" if r else "IDLE"
    print(f"NodeName={{args[3]}} Arch=x86_64 State={{state}} ThreadsPerCore=1" + (f" Reason={{r}} [admin@2026-01-01T00:00:00]" if r else ""))
    sys.exit(0)
open({str(log)!r}, "a").write(json.dumps(args) + "\\n")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    return env, log


def test_drain_prints_applies_and_never_overwrites(tmp_path, faulty):
    env, log = fake_scontrol(tmp_path, {"node0020": "bad DIMM, ticket 42"})
    r = run_cli("analyze", str(faulty), "--drain", env=env)
    assert r.returncode == 1, r.stderr
    assert "scontrol update NodeName=node0003 State=DRAIN 'Reason=fabricbench:{auto} nic node0003" in r.stdout
    assert "# skipped node0020: has a reason set by someone else (bad DIMM, ticket 42" in r.stdout
    assert not log.exists()  # printing only
    r = run_cli("analyze", str(faulty), "--drain", "--apply", env=env)
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(calls) == 1 and calls[0][:3] == ["update", "NodeName=node0003", "State=DRAIN"]
    assert calls[0][3].startswith("Reason=fabricbench:{auto} nic node0003")
    # links and uplinks are not one host's fault: never drained
    assert not any("leaf2" in " ".join(c) for c in calls)
