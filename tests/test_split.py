import pytest

from fabricbench.engine.split import color_of, groups_of, parse_split, split_from_env
from fabricbench.errors import UsageError
from fabricbench.results import read_results
from tests.conftest import run_cli


@pytest.mark.parametrize("spec,parsed", [("MOD 8", ("MOD", 8)), ("%8", ("MOD", 8)), ("AND 0x7", ("AND", 7)),
                                         ("div 4", ("DIV", 4)), ("| 1", ("OR", 1))])
def test_parse(spec, parsed):
    assert parse_split(spec) == parsed


@pytest.mark.parametrize("bad", ["MOD", "XOR 3", "MOD 0", "8", "MOD eight"])
def test_parse_rejects(bad):
    with pytest.raises(UsageError, match="--split"):
        parse_split(bad)


def test_mod_gives_one_gpu_per_node_per_group():
    # 2 nodes x 8 GPUs, MOD 8: group g holds local GPU g of each node (one rail)
    groups = groups_of(16, "MOD 8")
    assert len(groups) == 8 and groups[3] == [3, 11]
    assert color_of(13, "DIV 8") == 1 and color_of(13, "AND 0x7") == 5


def test_nccl_tests_variables_are_honoured():
    assert split_from_env({"NCCL_TESTS_SPLIT": "MOD 4"}) == "MOD 4"
    assert split_from_env({"NCCL_TESTS_SPLIT_MASK": "0x3"}) == "AND 0x3"
    assert split_from_env({}) is None


def test_split_run_gives_one_row_per_group(tmp_path):
    out = tmp_path / "split"
    res = run_cli("run", "all_reduce", "sendrecv", "--nprocs", "4", "--backend", "gloo", "--split", "MOD 2",
                  "-b", "4K", "-e", "8K", "-f", "2", "-n", "2", "-w", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    frame = read_results(out)
    ops = frame[frame.row_kind == "op"]
    assert len(ops) == 2 * 2 * 2  # ops x sizes x groups (gloo all_reduce: in place only; sendrecv: out of place)
    assert set(ops.group) == {0, 1} and (ops.nranks == 2).all() and (ops.nwrong == 0).all()
    ranks = frame[frame.row_kind == "rank"]
    assert set(ranks[ranks.group == 1]["rank"]) == {1, 3}  # world ranks of group 1
    assert "split 'MOD 2' into 2 groups of 2" in res.stdout


def test_uneven_split_is_refused():
    res = run_cli("run", "all_reduce", "--nprocs", "3", "--backend", "gloo", "--split", "MOD 2")
    assert res.returncode == 2 and "does not divide 3 ranks" in res.stderr


def test_corruption_in_a_split_run_is_caught(tmp_path):
    out = tmp_path / "split-corrupt"
    res = run_cli("run", "all_reduce", "--nprocs", "4", "--backend", "gloo", "--split", "MOD 2", "-b", "4K",
                  "-e", "4K", "-n", "2", "--out", str(out), env={"FABRICBENCH_INJECT": "corrupt@3"})
    assert res.returncode == 1 and "wrong values" in res.stderr
    ops = read_results(out)
    ops = ops[ops.row_kind == "op"]
    assert list(ops.sort_values("group").nwrong > 0) == [False, True]  # world rank 3 is in group 1
