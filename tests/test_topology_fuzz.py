"""Fuzzing (hypothesis): no input makes a parser, the loader, discovery or the expectations crash; the only
failure allowed is a UsageError (one line, exit 2 at the CLI)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fabricbench.errors import UsageError
from fabricbench.topology.collectives import expectations
from fabricbench.topology.discover import discover, ibnetdiscover, nccl_xml, nvidia_smi, slurm_topology, sysfs
from fabricbench.topology.graph import build_graph
from fabricbench.topology.load import load_text, parse_topology
from fabricbench.topology.paths import pair
from fabricbench.topology.rates import parse_rate
from tests.test_topology_helpers import DATA, REPO, fixtures_root

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fixture_texts(kind: str) -> list[str]:
    root = fixtures_root()
    texts = [p.read_text(errors="replace") for p in sorted((root / kind).glob("*.txt"))] if root else []
    if kind == "nvidia-smi-topo":
        texts += [(DATA / name).read_text() for name in ("topology-nvidia-smi-pcie-4gpu-selfwritten.txt",
                                                         "topology-nvidia-smi-glued-selfwritten.txt")]
    return texts or ["GPU0 X\n"]


def _only_usage_errors(fn, *args):
    try:
        fn(*args)
    except UsageError as err:
        assert "\n" not in str(err).strip(), str(err)


@st.composite
def mutated(draw, texts):
    """A real tool output, cut short and/or with bytes replaced, lines dropped or duplicated."""
    text = draw(st.sampled_from(texts))
    if len(text) > 20000:  # the 6000-line ibnetdiscover: work on a random window
        start = draw(st.integers(0, len(text) - 20000))
        text = text[start:start + 20000]
    ops = draw(st.lists(st.sampled_from(["cut", "replace", "drop", "dup", "insert"]), max_size=4))
    for op in ops:
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        if op == "cut":
            text = text[:i]
        elif op == "replace":
            text = text[:i] + draw(st.text(max_size=8)) + text[i + 1:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(["\t", " X ", "NV99", "\x1b[4m", "[", "]", '"', "<", ">", "=",
                                                    "#", "\n", "GPU0", "NIC0", "-1", "1e999"])) + text[i:]
        else:
            lines = text.split("\n")
            j = draw(st.integers(0, len(lines) - 1))
            if op == "drop":
                del lines[j]
            else:
                lines.insert(j, lines[j])
            text = "\n".join(lines)
    return text


SMI_TOKENS = st.sampled_from(["GPU0", "GPU1", "GPU2", "NIC0", "NIC1", "mlx5_0", " X ", "NV18", "NV4", "PIX", "PXB",
                              "SYS", "NODE", "PHB", "N/A", "0-15", "0", "1", "CPU Affinity", "NUMA Affinity",
                              "GPU NUMA ID", "\t", "  ", "NIC Legend:", "NIC0: mlx5_0", "\x1b[4m", "\x1b[0m"])


@FUZZ
@given(st.one_of(st.text(max_size=400),
                 st.lists(st.lists(SMI_TOKENS, max_size=14).map("\t".join), max_size=12).map("\n".join)))
def test_fuzz_nvidia_smi_text(text):
    _only_usage_errors(nvidia_smi.parse, text)


@FUZZ
@given(mutated(_fixture_texts("nvidia-smi-topo")))
def test_fuzz_nvidia_smi_mutated_real_outputs(text):
    _only_usage_errors(nvidia_smi.parse, text)


XML_TAGS = st.sampled_from(["system", "cpu", "pci", "gpu", "nvlink", "nic", "net"])
XML_ATTRS = st.dictionaries(st.sampled_from(["numaid", "busid", "class", "link_speed", "link_width", "dev", "sm",
                                             "target", "count", "tclass", "name", "speed", "gdr", "vendor"]),
                            st.sampled_from(["0", "-1", "0x030200", "0x020700", "0x060400", "0x068000", "90", "80",
                                             "16 GT/s", "32.0 GT/s PCIe", "x", "", "400000", "0000:1b:00.0",
                                             "99999999999999999999", "mlx5_0"]), max_size=5)


@st.composite
def xml_tree(draw, depth=0):
    tag = draw(XML_TAGS) if depth else "system"
    attrs = " ".join(f'{k}="{v}"' for k, v in draw(XML_ATTRS).items())
    children = draw(st.lists(xml_tree(depth + 1), max_size=3)) if depth < 4 else []
    return f"<{tag} {attrs}>{''.join(children)}</{tag}>"


@FUZZ
@given(st.one_of(st.text(max_size=300), xml_tree(), mutated(_fixture_texts("nccl-topo-xml"))))
def test_fuzz_nccl_xml(text):
    _only_usage_errors(nccl_xml.parse, text)


SLURM_LINE = st.lists(st.sampled_from(["SwitchName=s0", "SwitchName=s1", "SwitchName=s[0-1]", "Switches=s[0-3]",
                                       "Switches=s1", "Switches=s0", "Nodes=tux[0-3]", "Nodes=n[1-", "Nodes=",
                                       "LinkSpeed=900", "BlockName=b1", "BlockSizes=4", "Foo=bar", "#", "junk",
                                       "Nodes=a,b,c", "SwitchName="]), max_size=5).map(" ".join)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.lists(SLURM_LINE, max_size=8).map("\n".join),
                 mutated(_fixture_texts("slurm-topology"))))
def test_fuzz_slurm_topology(text):
    _only_usage_errors(slurm_topology.parse, text)


IB_LINE = st.sampled_from([
    'Switch\t36 "S-0001" # "leaf-1" enhanced port 0 lid 1 lmc 0', 'Switch 8 "S-0002" # "spine;X:Y/U1" base port 0',
    'Ca\t2 "H-0003" # "host1 mlx5_0"', 'Ca 1 "H-0004" # "MT4129 ConnectX7 Mellanox Technologies"',
    '[1]\t"H-0003"[1](0003) # "host1 mlx5_0" lid 3 4xNDR', '[2] "S-0002"[1] # "spine" lid 2 4xHDR',
    '[1](0003) "S-0001"[1] # lid 3 lmc 0 "leaf-1" lid 1 4xNDR', '[3] "S-0001"[3] # "loop" lid 1 1xSDR',
    '[65]\t"H-0009"[1](0009) # "Mellanox Technologies Aggregation Node" lid 9 4xNDR', "vendid=0x2c9", "",
    "# Topology file", '[x] "S-', 'Switch 0 ""'])


@FUZZ
@given(st.one_of(st.text(max_size=300), st.lists(IB_LINE, max_size=12).map("\n".join),
                 mutated(_fixture_texts("slurm-topology"))))
def test_fuzz_ibnetdiscover(text):
    _only_usage_errors(ibnetdiscover.parse, text)


@FUZZ
@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.none(), st.booleans()))
def test_fuzz_rates(value):
    try:
        rate = parse_rate(value)
    except ValueError:
        return
    assert rate > 0 and rate != float("inf")


SYSFS_VALUES = st.one_of(st.text(max_size=30), st.sampled_from(["400 Gb/sec (4X NDR)", "0 Gb/sec", "4: ACTIVE",
                                                                "1: DOWN", "-1", "25000", "InfiniBand", "16.0 GT/s PCIe",
                                                                "Unknown", "999999999999", "x0"]))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["sys/class/infiniband/mlx5_0/ports/1/rate",
                                           "sys/class/infiniband/mlx5_0/ports/1/state",
                                           "sys/class/infiniband/mlx5_0/ports/1/link_layer",
                                           "sys/class/infiniband/mlx5_0/ports/1/counters/symbol_error",
                                           "sys/class/infiniband/mlx5_0/device/numa_node",
                                           "sys/class/infiniband/mlx5_0/device/current_link_width",
                                           "sys/class/net/eth0/speed", "sys/class/net/eth0/operstate",
                                           "sys/class/net/eth0/device/numa_node"]), SYSFS_VALUES), max_size=8))
@example(
    files=[('sys/class/infiniband/mlx5_0/ports/1/counters/symbol_error', '¹')],
).via('discovered failure')
def test_fuzz_sysfs_and_discovery(files):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel, value in files:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value, errors="replace")
        _only_usage_errors(sysfs.read, root)
        _only_usage_errors(lambda: discover(sysfs_root=root, local=False))


@FUZZ
@given(mutated(_fixture_texts("nvidia-smi-topo")))
def test_fuzz_discovery_merge_from_smi(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "topo.txt"
        path.write_text(text, errors="replace")
        _only_usage_errors(lambda: discover(nvidia_smi_topo=path, local=False, link_rate="400 Gb/s"))


@FUZZ
@given(st.one_of(st.text(max_size=300), mutated([(REPO / "topologies" / f).read_text() for f in
                                                 ("dgx-h100.yaml", "fabric-lab.yaml", "pcie-8gpu.yaml")])))
def test_fuzz_topology_yaml(text):
    _only_usage_errors(load_text, text, "fuzz.yaml")


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=True),
                                 st.text(max_size=12), st.sampled_from(["400 Gb/s", "0 Gb/s", "nvswitch", "direct",
                                                                        "tree", "leaf_spine", "rail_optimized"])),
                       lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)
BASE = yaml.safe_load((REPO / "topologies" / "dgx-h100.yaml").read_text())


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(BASE) if p]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.one_of(JSONISH, st.just("__delete__"))), min_size=1,
                max_size=3),
       st.integers(1, 4), st.sampled_from(["all_reduce", "all_to_all", "sendrecv"]))
def test_fuzz_topology_structure_then_expectations(changes, nodes, op):
    """Valid files with fields replaced or deleted: either a one-line UsageError or positive, finite numbers."""
    data = copy.deepcopy(BASE)
    for path, value in changes:
        target = data
        try:
            for key in path[:-1]:
                target = target[key]
            if value == "__delete__":
                del target[path[-1]]
            else:
                target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        topo = parse_topology(data, "fuzz")
        result = expectations(topo, nodes=min(nodes, len(topo.host_names())), ops=[op])
        graph = build_graph(topo, min(2, len(topo.host_names())))
        hosts = topo.host_names()
        if len(hosts) > 1:
            pair(graph, topo, hosts[0], hosts[1])
    except UsageError as err:
        assert "\n" not in str(err)
        return
    for row in result["rows"]:
        if row.get("applicable"):
            assert 0 < row["expected_busbw"] <= row["line_busbw"] * 1.6 + 1e-9 < float("inf")


def test_fuzz_corpus_is_real():
    if fixtures_root() is None:
        pytest.skip("shared tool-output fixtures are not present next to this checkout")
    assert len(_fixture_texts("nvidia-smi-topo")) >= 5 and len(_fixture_texts("nccl-topo-xml")) >= 8
