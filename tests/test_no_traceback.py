"""Issue 10's list of inputs that printed a traceback: each is now one line on stderr and exit 2 (in-process, so an
exception that escapes fails the test). Also the resource limits: FIFOs/devices, YAML bombs, absurd counts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fabricbench.cli import main

REPO = Path(__file__).resolve().parents[1]
TOPO = REPO / "topologies" / "cpu-node.yaml"


def one_line_exit_2(capsys, *argv: str, fragment: str = "") -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert err.startswith("fabricbench: error: ") and "\n" not in err and "Traceback" not in err, err
    assert fragment in err, err
    return err


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nt") / "sim"
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--out", str(out), "--nodes", "6", "--leaves", "2", "--seed", "2"])
    assert exc.value.code == 0
    return out


@pytest.fixture(scope="module")
def baseline(sim, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("nt") / "base.json"
    with pytest.raises(SystemExit):
        main(["analyze", str(sim), "--format", "json", "--out", str(path)])
    return json.loads(path.read_text())


# -- analyze inputs ------------------------------------------------------------------------------------------
def test_struct_typed_node_column(sim, tmp_path, capsys):
    table = pq.read_table(sim / "results.parquet")
    i = table.schema.get_field_index("node_a")
    table = table.set_column(i, "node_a", pa.array([{"x": 1}] * table.num_rows))
    (tmp_path / "r").mkdir()
    pq.write_table(table, tmp_path / "r" / "results.parquet")
    one_line_exit_2(capsys, "analyze", tmp_path / "r", fragment="column node_a has type struct")


def test_deeply_nested_json(tmp_path, capsys):
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    one_line_exit_2(capsys, "analyze", tmp_path / "deep.json", fragment="nested too deep")


def test_non_utf8_file_name(tmp_path, capsys):
    name = os.fsdecode(b"bad\xffname.txt")
    (tmp_path / name).write_text("# nothing here\n")
    one_line_exit_2(capsys, "analyze", tmp_path / name, fragment="bad")


def test_size_1e400_in_nccl_tests_json(tmp_path, capsys):
    doc = {"config": {"nranks": "1e400"}, "results": [{"size": "1e400", "out_of_place": {"bus_bw": 1.0}},
                                                      {"size": 1024, "out_of_place": {"bus_bw": "1e400"}}]}
    (tmp_path / "n.json").write_text(json.dumps(doc))
    one_line_exit_2(capsys, "analyze", tmp_path / "n.json", fragment="no usable results")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_devices_and_fifos_are_refused_at_once(tmp_path, capsys, target):
    if target == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)
    one_line_exit_2(capsys, "analyze", target, fragment="not a regular file")


@pytest.mark.parametrize("out", ["DIR", "/proc/nope/r.txt", "/dev/full"])
def test_analyze_out_that_cannot_be_written(sim, tmp_path, capsys, out):
    one_line_exit_2(capsys, "analyze", sim, "--out", tmp_path if out == "DIR" else out)
    assert stat_is_char_device("/dev/full")


def stat_is_char_device(path: str) -> bool:
    import stat

    return stat.S_ISCHR(os.stat(path).st_mode)


# -- criteria ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("thresholds,fragment", [
    ({"fleet_fraction": 0}, "thresholds.fleet_fraction"), ({"fleet_fraction": -1}, "thresholds.fleet_fraction"),
    ({"latency_factor": -1}, "thresholds.latency_factor"), ({"baseline_drop": 1}, "thresholds.baseline_drop"),
    ({"fleet_fraction": float("nan")}, "finite"), ({"pair_sigmas": float("inf")}, "finite"),
])
def test_criteria_values(sim, baseline, tmp_path, capsys, thresholds, fragment):
    (tmp_path / "b.json").write_text(json.dumps(baseline))
    crit = tmp_path / "c.yaml"
    crit.write_text(yaml.safe_dump({"thresholds": thresholds, "tests": [{"name": "t", "kinds": ["nic"]}]}))
    one_line_exit_2(capsys, "analyze", sim, "--criteria", crit, "--baseline", tmp_path / "b.json", fragment=fragment)


def test_criteria_not_utf8_and_nan_test_value(sim, tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(b"tests:\n  - name: \xff\xfe\n    kinds: [nic]\n")
    one_line_exit_2(capsys, "analyze", sim, "--criteria", tmp_path / "c.yaml", fragment="not UTF-8")
    (tmp_path / "d.yaml").write_text("tests:\n  - name: t\n    kinds: [nic]\n    min_confidence: .nan\n")
    one_line_exit_2(capsys, "analyze", sim, "--criteria", tmp_path / "d.yaml", fragment="tests[0].min_confidence")


# -- baselines --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change,fragment", [
    (lambda b: {**b, "fleet": [{k: v for k, v in r.items() if k != "size"} for r in b["fleet"]]}, "fleet.0.size"),
    (lambda b: {**b, "fleet": [1, 2]}, "fleet.0"),
    (lambda b: {**b, "fleet": [{**r, "median_gbps": "fast"} for r in b["fleet"]]}, "fleet.0.median_gbps"),
    (lambda b: {**b, "fleet": [{**r, "median_gbps": float("inf")} for r in b["fleet"]]}, "finite"),
    (lambda b: {**b, "node_levels": [1, 2]}, "node_levels"),
    (lambda b: {**b, "node_levels": {"node0001": "x"}}, "node_levels.node0001"),
])
def test_baseline_values(sim, baseline, tmp_path, capsys, change, fragment):
    (tmp_path / "b.json").write_text(json.dumps(change(baseline)))
    one_line_exit_2(capsys, "analyze", sim, "--baseline", tmp_path / "b.json", fragment=fragment)


# -- topologies -------------------------------------------------------------------------------------------------
LAUGHS = "evidence:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))


@pytest.mark.parametrize("edit,fragment", [
    (lambda s: s.replace("nodes: 4", "nodes: " + "9" * 5000), "cannot be read as YAML"),
    (lambda s: s.replace("nodes: 4", "nodes: " + "9" * 4000), "fabric.nodes"),
    (lambda s: s.replace("ranks_per_node: 2", "ranks_per_node: 100000000"), "ranks_per_node"),
    (lambda s: LAUGHS + s, "aliases expand to more than"),
    (lambda s: s + "name: again\n", "duplicate key 'name'"),
    (lambda s: s + "sources: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
])
def test_topology_files(tmp_path, capsys, edit, fragment):
    path = tmp_path / "t.yaml"
    path.write_text(edit(TOPO.read_text()))
    one_line_exit_2(capsys, "topo", "validate", path, fragment=fragment)


def test_analyzer_topology_with_absurd_counts(sim, tmp_path, capsys):
    path = tmp_path / "f.yaml"
    path.write_text("fabric: {node_names: 'node[0001-0006]', nodes_per_leaf: 3, spines: 1000000000}\n")
    one_line_exit_2(capsys, "analyze", sim, "--topology", path, fragment="fabric.spines")
    path.write_text("leaves: {leaf1: [node0001]}\nexpected_gbps: .nan\n")
    one_line_exit_2(capsys, "analyze", sim, "--topology", path, fragment="expected_gbps")


def test_one_bad_file_in_fabricbench_topologies_does_not_break_topo_list(tmp_path, capsys, monkeypatch):
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    monkeypatch.setenv("FABRICBENCH_TOPOLOGIES", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        main(["topo", "list"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "broken" in out and "invalid" in out and "dgx-h100" in out


def test_discover_name_with_a_newline(capsys):
    one_line_exit_2(capsys, "topo", "discover", "--no-local", "--name", "x\nevil: 1", fragment="--name")


def test_discovery_from_topology_conf_writes_a_file_validate_accepts(fixtures_dir, tmp_path, capsys):
    conf = fixtures_dir / "slurm-topology" / "topology-conf-binary-tree-8node-schedmd-doc.txt"
    out = tmp_path / "d.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["topo", "discover", "--no-local", "--slurm-topology", str(conf), "-o", str(out)])
    assert exc.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["topo", "validate", str(out)])
    assert exc.value.code == 0 and "ok (8 hosts" in capsys.readouterr().out


# -- options ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,fragment", [
    (["simulate", "--out", "X", "--sizes", "1e400"], "--sizes"),
    (["simulate", "--out", "X", "--nodes", "1000000"], "--nodes 1000000 is above the limit"),
    (["run", "--nprocs", "2", "-b", "1K", "-e", "1T", "-i", "1"], "sizes, more than the 4096"),
    (["run", "--nprocs", "2", "--timeout", "nan"], "--timeout must be a finite number"),
    (["sweep", "pairwise", "--local", "--nodes", "100000", "--out", "X"], "--nodes 100000 is above the limit"),
    (["sweep", "pairwise", "--local", "--nodes", "0", "--out", "X"], "--nodes must be at least 1"),
    (["sweep", "pairwise", "--local", "--nodes", "2", "--timeout", "nan", "--out", "X"], "--timeout must be a finite"),
    (["sweep", "pairwise", "--nodes", "2", "--pair-timeout", "inf", "--dry-run"], "--pair-timeout"),
    (["submit", "all_reduce", "--nodes", "2", "--ntasks-per-node", "0", "--dry-run"], "--ntasks-per-node"),
    (["submit", "all_reduce", "--nodes", "2", "--poll", "-1", "--dry-run"], "--poll must be positive"),
    (["submit", "all_reduce", "--nodes", "2", "--timeout", "inf", "--dry-run"], "--timeout"),
    (["submit", "all_reduce", "--nodes", "2", "--sbatch-arg=--outp=/tmp/x", "--dry-run"], "sets this itself"),
    (["submit", "all_reduce", "--nodes", "2", "--sbatch-arg=-o=/tmp/x", "--dry-run"], "sets this itself"),
    (["submit", "all_reduce", "--nodes", "2", "--sbatch-arg=-e", "--dry-run"], "sets this itself"),
    (["submit", "all_reduce", "--nodes", "2", "--sbatch-arg=-ofile", "--dry-run"], "sets this itself"),
    (["analyze", "X", "--drain", "--drain-confidence", "nan"], "--drain-confidence"),
])
def test_option_values(tmp_path, capsys, argv, fragment):
    argv = [str(tmp_path / "o") if a == "X" else a for a in argv]
    one_line_exit_2(capsys, *argv, fragment=fragment)


def test_slurm_tasks_per_node_garbage(monkeypatch, capsys):
    for key, value in {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "2",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "n1",
                       "SLURM_TASKS_PER_NODE": "2(xq"}.items():
        monkeypatch.setenv(key, value)
    one_line_exit_2(capsys, "run", "all_reduce", "-b", "1K", "-e", "1K", "--backend", "gloo",
                    fragment="SLURM_TASKS_PER_NODE")


def test_inject_aimed_at_a_missing_rank(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FABRICBENCH_INJECT", "die@7")
    one_line_exit_2(capsys, "run", "all_reduce", "--nprocs", "4", "--backend", "gloo", "-b", "1K", "-e", "1K",
                    "--out", tmp_path / "o", fragment="rank 7 is not a rank of this 4-rank run")


# -- collect on a damaged sweep directory -------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ['{"config": 5', "[1, 2]", '{"config": []}', "plan:x"])
def test_collect_on_a_corrupt_sweep(tmp_path, capsys, damage):
    from fabricbench.slurm.sweep import Plan

    Plan(run_id="r", out_dir=str(tmp_path), nodes=["a", "b"], rounds=[], sizes=[1024]).save(tmp_path / "plan.json")
    if damage.startswith("plan:"):
        (tmp_path / "plan.json").write_text(damage[5:])
    else:
        (tmp_path / "sweep.json").write_text(damage)
    one_line_exit_2(capsys, "collect", tmp_path)
    assert not (tmp_path / "results.parquet").exists()




@pytest.mark.parametrize("option", ["--nvidia-smi-topo", "--nccl-xml", "--slurm-topology", "--ibnetdiscover"])
def test_discover_sources_refuse_devices_and_fifos(tmp_path, capsys, option):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for source in ("/dev/zero", fifo):
        one_line_exit_2(capsys, "topo", "discover", "--no-local", option, source, fragment="not a regular file")
