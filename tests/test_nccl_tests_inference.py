"""nccl-tests text as it really is: the collective inferred from the columns, launcher prefixes, tabs, N/A."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabricbench.analyze.importers.nccl_ops import Row, infer_op, name_in
from fabricbench.analyze.importers.nccl_tests_text import parse_text

from tests.conftest import _fixtures_root

FIXTURES = (_fixtures_root() or Path("/nonexistent")) / "nccl-tests"

# file -> the ops its tables measured, in order (from the .src descriptions)
EXPECTED = {
    "allgather-gb10-2node-v2.18.5-gb10-training.txt": ["all_gather"],
    "allreduce-a100-40gb-x8-single-node-dgx-galvatron-fixture.txt": ["all_reduce"],
    "allreduce-gb200-20rack-1440gpu-tail-coreweave.txt": ["all_reduce"],
    "allreduce-gb200-2rack-144gpu-tail-coreweave.txt": ["all_reduce"],
    "allreduce-gh200-2node-1gpu-v2.18.2-sarus-cscs.txt": ["all_reduce"],
    "allreduce-gh200-2node-8gpu-slingshot-indented-cscs.txt": ["all_reduce"],
    "allreduce-h100-64gpu-sharp-mpijob-elided-coreweave.txt": ["all_reduce"],
    "alltoall-b300x8-single-node-new-format-oci.txt": ["alltoall"],
    "alltoall-gb200-2host-hand-condensed-oci.txt": ["alltoall"],
    "alltoall-gb300-nvl72-2host-new-format-oci.txt": ["alltoall"],
    "ten-collectives-b200-2node-16gpu-ib-hypercube-failed-orcd.txt":
        ["sendrecv", "all_reduce", "all_gather", "reduce_scatter", "reduce", "broadcast", "alltoall", "gather",
         "scatter", "hypercube"],
}
EXPECTED["ten-collectives-b200x8-single-node-hypercube-failed-orcd.txt"] = \
    EXPECTED["ten-collectives-b200-2node-16gpu-ib-hypercube-failed-orcd.txt"]

# what the columns alone cannot tell apart (identical signatures in nccl-tests' source)
TWINS_AT_2 = {"all_reduce": {"sendrecv"}, "sendrecv": {"all_reduce"}}
TWINS = {"all_gather": {"alltoall"}, "alltoall": {"all_gather"}, "gather": {"scatter"}, "scatter": {"gather"}}


def fixture(name: str) -> str:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"shared fixtures not present ({path})")
    return path.read_text(errors="replace")


def ops_in_order(ds) -> list[str]:
    """One op per table, in file order (from the importer's record of how each was decided)."""
    return [rec["op"] for rec in ds.extra["op_inference"]]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_published_file_gets_its_op(name):
    ds = parse_text(fixture(name), str(FIXTURES / name))
    assert ops_in_order(ds) == EXPECTED[name]
    assert "unknown" not in set(ds.groups["op"])
    assert all(("named by" in r["how"] or "inferred" in r["how"]) for r in ds.extra["op_inference"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_op_from_the_numbers_alone(name, tmp_path):
    """Strip every name (command lines, markers, 'Collective test starting', file name): the columns still
    say which collective ran, up to the pairs nccl-tests prints identically."""
    text = fixture(name)
    lines = [ln for ln in text.splitlines()
             if "_perf" not in ln and "%%%" not in ln and "collectives =" not in ln]
    # the numbers alone: one table at a time, as a user would save it
    ds = parse_text("\n".join(lines), str(tmp_path / "out.txt"))
    got = ops_in_order(ds)
    assert len(got) == len(EXPECTED[name]) or len(set(EXPECTED[name])) > len(got)
    nranks = dict(zip(ds.groups["op"], ds.groups["nranks"]))
    for want, op in zip(EXPECTED[name], got):
        cands = set(op.split("|"))
        assert want in cands, (want, op)
        # at 2 ranks all_reduce's 2(n-1)/n is 1, as sendrecv's
        twins = TWINS.get(want, set()) | (TWINS_AT_2.get(want, set()) if nranks[op] == 2 else set())
        assert cands <= {want} | twins, (want, op)


def test_launcher_prefixes_tabs_blank_lines_and_na(tmp_path):
    """A 16-rank all_reduce with srun -l / mpirun --tag-output prefixes, tabs, blank lines and N/A columns,
    named nowhere: inferred from busbw/algbw = 2(n-1)/n with n from the Rank lines."""
    ranks = [f"#  Rank {r:2d} Group  0 Pid {1000 + r} on gpu{r // 8 + 1:02d} device {r % 8} [0x{r:02x}] NVIDIA H100"
             for r in range(16)]
    body = ["# nThread 1 nGpus 1 minBytes 1048576 maxBytes 1073741824 step: 2(factor) warmup iters: 5 iters: 20",
            "#", "# Using devices", *ranks, "",
            "#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong",
            "\t268435456\t67108864\tfloat\tsum\t-1\t5000.0\t53.69\t100.66\t0\t5001.0\t53.68\t100.65\tN/A",
            "", "   536870912     134217728     float     sum      -1   9900.0   54.23  101.68    N/A      N/A     N/A     N/A    N/A",
            "  1073741824     268435456     float     sum      -1    19700   54.50  102.19      0    19710   54.48  102.15      0",
            "# Avg bus bandwidth    : 101.5"]
    prefixes = [" 0: ", "[0] ", "[1,0]<stdout>:"]
    for prefix in prefixes:
        text = "\n".join(prefix + ln if i % 3 else ln for i, ln in enumerate(body))
        ds = parse_text(text, str(tmp_path / "job-1234.out"))
        assert set(ds.groups["op"]) == {"all_reduce"}, prefix
        assert set(ds.groups["nranks"]) == {16}
        assert set(ds.groups["hosts"]) == {"gpu01,gpu02"}
        assert sorted(set(ds.groups["size"])) == [268435456, 536870912, 1073741824]
        assert any("inferred from the numbers" in c for c in ds.caveats)


def test_ambiguous_two_ranks_is_reported_with_candidates():
    # 2 ranks, redop sum, root -1, count = size/4, busbw = algbw: all_reduce and sendrecv print the same
    rows = [Row(1 << 30, 1 << 28, "float", "sum", -1, 22.5, 22.5)]
    inf = infer_op(rows, 2)
    assert set(inf.ops) == {"all_reduce", "sendrecv"} and "most permissive" in inf.how
    assert infer_op(rows, 2, name="all_reduce_perf", name_from="the command line").ops == ["all_reduce"]


def test_a_file_name_that_contradicts_the_numbers_is_overruled():
    rows = [Row(1 << 30, (1 << 30) // 32, "float", "none", -1, 100.0, 87.5)]  # 8 ranks, (n-1)/n, count/n
    inf = infer_op(rows, 8, name="allreduce", name_from="file name")
    assert "all_reduce" not in inf.ops and "alltoall" in inf.ops and "do not fit" in inf.how


def test_names_in_file_names_and_command_lines():
    assert name_in("allreduce-h100-64gpu.txt") == "all_reduce"
    assert name_in("/opt/nccl-tests/build/all_reduce_perf -b 8 -e 8G") == "all_reduce"
    assert name_in("reduce_scatter_perf") == "reduce_scatter"
    assert name_in("nccl-alltoall-run3.log") == "alltoall"
    assert name_in("job-1234.out") is None
