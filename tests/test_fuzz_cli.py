"""Property-based fuzzing (hypothesis) of every file reader and the CLI commands' options (issue 10).

For any input: the exit code is 0, 1, 2 or 3; nothing escapes as a traceback; each command finishes within
EXAMPLE_LIMIT_S and the process's peak memory stays bounded; nothing is left half-written (no temporary files, every
file written is whole). Commands run in-process (fast); inputs that hypothesis found to break a command once are
kept as @example so they are replayed on every run (derandomized: the same examples every run). Budget:
about 30 s on an idle 2-core machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fabricbench.cli import main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path("/work/shared/fixtures/tool-outputs")
# No hypothesis deadline (a loaded CI machine makes timings flaky); cli() bounds each command at EXAMPLE_LIMIT_S.
FUZZ = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MEMORY_BOUND_KB = 3 * 1024 * 1024  # peak RSS of the whole test process
EXAMPLE_LIMIT_S = 60  # one command on one input; a hang (a FIFO read, an unbounded list) trips it


def opt(option: str, value: str) -> list[str]:
    """One option as a user could type it, whatever the value (even '-1' or ''): --long=VALUE, -sVALUE."""
    return [f"{option}={value}"] if option.startswith("--") else [option + value]


def cli(*argv) -> tuple[int, str, str]:
    """Run fabricbench in-process; (exit code, stdout, stderr). An exception that is not SystemExit fails."""
    out, err = io.StringIO(), io.StringIO()

    def too_long(signum, frame):
        raise AssertionError(f"fabricbench {' '.join(map(str, argv))[:200]} ran past {EXAMPLE_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(EXAMPLE_LIMIT_S)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([os.fspath(a) if isinstance(a, Path) else a for a in argv])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue()


def check(code: int, stderr: str, workdir: Path | None = None) -> None:
    assert code in (0, 1, 2, 3), (code, stderr[-500:])
    assert "Traceback" not in stderr, stderr[-2000:]
    if code == 2:
        lines = [line for line in stderr.strip().splitlines() if line.startswith("fabricbench: error:")]
        assert len(lines) == 1, stderr[-2000:]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < MEMORY_BOUND_KB
    if workdir is not None:  # nothing half-written: no temporary file survives a command
        assert not [p for p in workdir.rglob("*.tmp")], list(workdir.rglob("*.tmp"))


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fz") / "sim"
    code, _, err = cli("simulate", "--out", out, "--nodes", "6", "--leaves", "2", "--seed", "1", "--gpus", "4")
    assert code == 0, err
    return out


def _seed_texts() -> list[bytes]:
    texts = []
    if FIXTURES.is_dir():
        for kind in ("nccl-tests", "nvbandwidth", "ib"):
            texts += [p.read_bytes()[:20000] for p in sorted((FIXTURES / kind).glob("*.txt"))[:3]]
    return texts or [b"#       size         count      type   redop    root     time   algbw   busbw #wrong\n"]


SEEDS = _seed_texts()


@st.composite
def mangled(draw) -> bytes:
    """A real tool output cut, spliced and sprinkled with hostile bytes and numbers."""
    base = draw(st.sampled_from(SEEDS))
    cut = draw(st.integers(0, len(base)))
    junk = draw(st.sampled_from([b"", b"\x00\xff\xfe", b"nan", b"1e400", b"-1", b"9" * 400, b"\n" * 3, b"[" * 50,
                                 b"\xe2\x80\xae", b"inf  inf  inf", b"{\"results\": [", b"PAR1"]))
    tail = draw(st.binary(max_size=200))
    return base[:cut] + junk + tail + base[cut:cut + draw(st.integers(0, 2000))]


def json_values():
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                       st.sampled_from(["1e400", "nan", "-inf", "2(xq", "lab[1-4]", "$(id)"]))
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                        max_leaves=20)


# -- file readers -----------------------------------------------------------------------------------------------
@FUZZ
@given(data=mangled())
@example(data=b"[" * 100000 + b"]" * 100000)
@example(data=b'{"results": [{"size": "1e400", "out_of_place": {"bus_bw": 1}}], "config": {"nranks": "1e400"}}')
@example(data=b"PAR1" + b"\x00" * 100)
def test_analyze_any_tool_output(tmp_path_factory, data):
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = work / "input.txt"
    path.write_bytes(data)
    code, _, err = cli("analyze", path, "--format", "json", "--out", work / "report.json")
    check(code, err, work)
    if (work / "report.json").exists():
        json.loads((work / "report.json").read_text())  # whole, never half a report


@FUZZ
@given(doc=json_values())
@example(doc={"results": [{"size": "1e400"}], "config": {"devices": [{"hostname": "lab[1-4]"}]}})
@example(doc={"testcases": [{"name": "x", "bandwidth_matrix": [[float("nan")]]}]})
def test_analyze_any_json(tmp_path_factory, doc):
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = work / "input.json"
    path.write_text(json.dumps(doc))
    code, _, err = cli("analyze", path)
    check(code, err, work)


THRESHOLDS = ["fleet_fraction", "baseline_drop", "expected_fraction", "min_spread", "pair_sigmas",
              "component_sigmas", "min_confidence", "nvlink_min", "explain", "latency_factor"]
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.integers(-(10**20), 10**20),
                    st.sampled_from(["x", "1e400", "", None, [], {}]))


@FUZZ
@given(th=st.dictionaries(st.sampled_from(THRESHOLDS), NUMBERS, max_size=4),
       test=st.fixed_dictionaries({"name": st.text(min_size=0, max_size=8)},
                                  optional={"min_confidence": NUMBERS, "min_gbps": NUMBERS,
                                            "kinds": st.sampled_from([["nic"], ["bogus"], "nic", None])}))
@example(th={"fleet_fraction": float("nan")}, test={"name": "t", "kinds": ["nic"]})
@example(th={"baseline_drop": 1}, test={"name": "t", "kinds": ["nic"]})
def test_criteria_files(sim, tmp_path_factory, th, test):
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = work / "c.yaml"
    path.write_text(yaml.safe_dump({"thresholds": th, "tests": [test]}))
    code, _, err = cli("analyze", sim, "--criteria", path)
    check(code, err, work)


@FUZZ
@given(fleet=st.lists(st.fixed_dictionaries({}, optional={"class": st.sampled_from(["inter-leaf", "intra-leaf", 3]),
                                                            "size": NUMBERS, "median_gbps": NUMBERS}), max_size=3),
       levels=st.one_of(json_values(), st.dictionaries(st.sampled_from(["node0001", "node0002"]),
                                                       st.fixed_dictionaries({"send": NUMBERS, "recv": NUMBERS}))))
@example(fleet=[{"class": "inter-leaf", "size": 268435456, "median_gbps": float("inf")}], levels={})
def test_baseline_files(sim, tmp_path_factory, fleet, levels):
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = work / "b.json"
    path.write_text(json.dumps({"fleet": fleet, "node_levels": levels}))
    code, _, err = cli("analyze", sim, "--baseline", path)
    check(code, err, work)


TOPO = (REPO / "topologies" / "cpu-node.yaml").read_text()


@FUZZ
@given(key=st.sampled_from(["nodes: 4", "ranks_per_node: 2", "numa_nodes: 2", "rate: 100 Gb/s", "kind: single_switch",
                            "name: cpu-node"]),
       value=st.one_of(st.sampled_from(["9" * 5000, "9" * 4000, ".nan", "-1", "0", "1e400", "*x", "&a [1]", "&a [*a]", "{",
                                        "'\\n'", "[" * 200]), st.text(max_size=12)))
@example(key="nodes: 4", value="9" * 5000)
def test_topology_files(tmp_path_factory, key, value):
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = work / "t.yaml"
    name = key.split(":")[0]
    path.write_text(TOPO.replace(key, f"{name}: {value}", 1))
    for argv in (("topo", "validate", path), ("topo", "expect", path, "--op", "all_reduce")):
        code, _, err = cli(*argv)
        check(code, err, work)


# -- command-line options ---------------------------------------------------------------------------------------
OPTION_VALUES = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", "1e18", "99999999999", "",
                                           "1K", "2", "abc", "\n", "$(id)", "2(xq", "-o=x"]),
                          st.integers(-3, 3).map(str), st.text(max_size=6))


@FUZZ
@given(option=st.sampled_from(["--nodes", "--ntasks-per-node", "--gpus-per-node", "--poll", "--timeout", "-n", "-w",
                               "-b", "-e", "-i", "-f", "--root", "--check", "--sbatch-arg", "--env", "--time",
                               "--partition", "--nodelist"]),
       value=OPTION_VALUES)
@example(option="--poll", value="-1")
@example(option="-i", value="1")
@example(option="--sbatch-arg", value="--outp=/tmp/x")
def test_submit_options(tmp_path_factory, option, value):
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    argv = ["submit", "all_reduce", "--nodes", "2", "-b", "1K", "-e", "1M", "--dry-run", "--out", str(work / "o")]
    code, _, err = cli(*argv, *opt(option, value))
    check(code, err, work)


@FUZZ
@given(option=st.sampled_from(["--nodes", "--leaves", "--spines", "--rails", "--gpus", "--repeats", "--noise",
                               "--intermittent", "--sizes", "--pattern", "--fault", "--seed"]),
       value=OPTION_VALUES)
@example(option="--nodes", value="1000000")
@example(option="--sizes", value="1e400")
def test_simulate_options(tmp_path_factory, option, value):
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    base = {"--nodes": "4", "--leaves": "2", "--sizes": "1M"}
    base[option] = value
    argv = ["simulate", "--out", str(work / "o")]
    for k, v in base.items():
        argv += opt(k, v)
    code, _, err = cli(*argv)
    check(code, err, work)
    if code == 0:  # a results directory that is whole: it reads back
        from fabricbench.results import read_results

        assert len(read_results(work / "o")) > 0


@FUZZ
@given(option=st.sampled_from(["--drain-confidence", "--format", "--host", "--topology", "--criteria", "--baseline"]),
       value=OPTION_VALUES)
@example(option="--drain-confidence", value="nan")
def test_analyze_options(sim, tmp_path_factory, option, value):
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    code, _, err = cli("analyze", sim, f"{option}={value}")
    check(code, err, work)


@FUZZ
@given(value=st.one_of(st.sampled_from(["2(xq", "2(x", "(x2)", "1(x999999999)", "", ",", "-1", "4(x2),3"]),
                       st.text(max_size=10)))
@example(value="2(xq")
def test_slurm_tasks_per_node(value):
    from fabricbench.engine.ranks import _tasks_on_this_node
    from fabricbench.errors import UsageError

    try:
        n = _tasks_on_this_node({"SLURM_TASKS_PER_NODE": value, "SLURM_NODEID": "1"}, 4)
        assert isinstance(n, int)
    except UsageError as err:
        assert "\n" not in str(err)


@FUZZ
@given(name=st.text(max_size=30))
@example(name="lab[1-4]")
@example(name="lab3 lab4")
@example(name="lab1\n; rm -rf /")
def test_drain_node_names(name):
    from fabricbench.errors import UsageError
    from fabricbench.slurm import nodes

    try:
        ok = nodes.validate_node_name(name)
    except UsageError as err:
        assert "\n" not in str(err)
        return
    # accepted names are plain: nothing Slurm would expand, nothing a shell would interpret
    assert ok == name and not set(name) & set("[],; \t\n$`'\"\\|&<>(){}*?!#~=")
    assert nodes.shell_line(["scontrol", "update", f"NodeName={name}"]).count(" ") == 2



@FUZZ
@given(which=st.sampled_from(["sweep.json", "plan.json", "run.json", "job.json"]), doc=json_values())
@example(which="sweep.json", doc={"config": 5})
@example(which="plan.json", doc={"version": 1, "zzz": 1})
def test_collect_on_damaged_sweep_directories(tmp_path_factory, which, doc):
    from fabricbench.slurm.sweep import Plan

    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    Plan(run_id="r", out_dir=str(work), nodes=["a", "b"], rounds=[], sizes=[1024]).save(work / "plan.json")
    (work / which).write_text(json.dumps(doc))
    code, _, err = cli("collect", work)
    check(code, err, work)


DISCOVER_SOURCES = {"--nvidia-smi-topo": "nvidia-smi-topo", "--nccl-xml": "nccl-topo-xml",
                    "--slurm-topology": "slurm-topology", "--ibnetdiscover": "slurm-topology"}


@FUZZ
@given(option=st.sampled_from(sorted(DISCOVER_SOURCES)), cut=st.integers(0, 4000), junk=st.binary(max_size=64))
def test_topo_discover_on_damaged_tool_outputs(tmp_path_factory, option, cut, junk):
    files = sorted((FIXTURES / DISCOVER_SOURCES[option]).glob("*.txt")) if FIXTURES.is_dir() else []
    base = files[cut % len(files)].read_bytes() if files else b""
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    src = work / "in.txt"
    src.write_bytes(base[:cut] + junk + base[cut:cut + 3000])
    code, _, err = cli("topo", "discover", "--no-local", option, src, "-o", work / "t.yaml")
    check(code, err, work)
    if code == 0:  # what discover writes, validate accepts
        code, _, err = cli("topo", "validate", work / "t.yaml")
        assert code == 0, err
