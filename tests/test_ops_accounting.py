"""Byte accounting and busbw factors per op, as nccl-tests defines them (shared REFERENCE.md)."""

import pytest

from fabricbench.errors import UsageError
from fabricbench.ops import OPS, get_op, resolve_ops


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_busbw_factors(n):
    assert OPS["all_reduce"].busbw_factor(n) == pytest.approx(2 * (n - 1) / n)
    for name in ("all_gather", "reduce_scatter", "all_to_all"):
        assert OPS[name].busbw_factor(n) == pytest.approx((n - 1) / n)
    for name in ("broadcast", "reduce", "sendrecv", "pingpong", "p2p_uni", "p2p_bi"):
        assert OPS[name].busbw_factor(n) == 1.0


def test_all_reduce_layout():
    lay = OPS["all_reduce"].layout(1 << 20, 4, 8, 0)
    assert (lay.send_count, lay.recv_count, lay.count, lay.algbw_bytes) == (262144, 262144, 262144, 1 << 20)
    assert lay.size_bytes(4) == 1 << 20


def test_all_gather_layout_matches_nccl_tests():
    # nccl-tests all_gather, 8 ranks, size 1 MiB float: count column 32768 (per-rank block), size = output.
    lay = OPS["all_gather"].layout(1 << 20, 4, 8, 3)
    assert lay.count == 32768 and lay.send_count == 32768 and lay.recv_count == 262144
    assert lay.size_bytes(4) == 1 << 20 and lay.algbw_bytes == 1 << 20
    assert lay.send_inplace_offset == 3 * 32768


def test_reduce_scatter_layout_matches_nccl_tests():
    lay = OPS["reduce_scatter"].layout(1 << 20, 4, 8, 5)
    assert lay.count == 32768 and lay.send_count == 262144 and lay.recv_count == 32768
    assert lay.size_bytes(4) == 1 << 20 and lay.recv_inplace_offset == 5 * 32768


def test_blocks_aligned_to_16_bytes():
    # 1000 B over 3 ranks of float: 83 elements per rank, rounded down to a multiple of 4 (16 B).
    lay = OPS["all_to_all"].layout(1000, 4, 3, 0)
    assert lay.count == 80 and lay.send_count == 240


def test_p2p_bi_counts_both_directions():
    lay = OPS["p2p_bi"].layout(4096, 4, 2, 0)
    assert lay.algbw_bytes == 8192 and lay.size_bytes(4) == 4096


def test_pingpong_reports_one_way():
    assert OPS["pingpong"].time_divisor == 2


def test_rank_requirements():
    assert OPS["pingpong"].check_nranks(4) == "pingpong needs exactly 2 ranks, got 4"
    assert OPS["p2p_uni"].check_nranks(2) is None
    assert OPS["all_reduce"].check_nranks(1) is None


def test_names_aliases_and_groups():
    assert get_op("allreduce").name == "all_reduce"
    assert get_op("all_gather_perf").name == "all_gather"
    with pytest.raises(UsageError, match="unknown operation"):
        get_op("allreduce_v")
    names = [op.name for op in resolve_ops(["all"], 4)]
    assert names == ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all", "sendrecv"]
    assert [op.name for op in resolve_ops(["all"], 2)][-3:] == ["pingpong", "p2p_uni", "p2p_bi"]
    assert [op.name for op in resolve_ops(["p2p", "pingpong"], 2)] == ["pingpong", "p2p_uni", "p2p_bi"]
