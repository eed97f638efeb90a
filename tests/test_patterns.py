"""Check data: distinct per rank, exact under any reduction order, and wrong bits are counted."""

import numpy as np
import pytest

from fabricbench.engine.dtypes import get_dtype
from fabricbench.engine.patterns import Pattern, count_wrong
from fabricbench.ops import OPS


def _reduce_in_dtype(pattern, order, count):
    """Reduce in the element type itself, in the given rank order (as a library might)."""
    acc = None
    for r in order:
        v = pattern.values(r, 0, count)
        if pattern.dtype.name == "bfloat16":  # emulate bf16 arithmetic through float32 (exact here)
            v = (v.astype(np.uint32) << 16).view(np.float32)
        if acc is None:
            acc = v.copy()
        elif pattern.redop in ("sum", "avg"):
            acc = acc + v
        elif pattern.redop == "prod":
            acc = acc * v
        elif pattern.redop == "max":
            acc = np.maximum(acc, v)
        else:
            acc = np.minimum(acc, v)
    if pattern.redop == "avg":
        acc = (acc / len(order)).astype(acc.dtype)
    if pattern.dtype.name == "bfloat16":
        acc = (acc.view(np.uint32) >> 16).astype(np.uint16)
    return acc


# Integer avg is refused by every backend (no exact definition to check), so it is not a case here.
_CASES = [(d, r) for d in ("float", "half", "bfloat16", "double", "int8", "uint8", "int32", "int64")
          for r in ("sum", "prod", "max", "min", "avg") if not (r == "avg" and get_dtype(d).kind != "float")]


@pytest.mark.parametrize("dtype,redop", _CASES)
@pytest.mark.parametrize("n", [2, 3, 8, 64, 200])
def test_exact_whatever_the_order(dtype, redop, n):
    dt = get_dtype(dtype)
    p = Pattern(dt, redop, n, seed=3)
    expected = p.reduced(0, 512)
    rng = np.random.default_rng(n)
    for order in (range(n), reversed(range(n)), rng.permutation(n)):
        got = _reduce_in_dtype(p, list(order), 512)
        assert count_wrong(got, expected, dt, p.avg_ulps) == 0


@pytest.mark.parametrize("redop", ["sum", "prod", "max", "min", "avg", "none"])
def test_every_rank_contributes_something_different(redop):
    p = Pattern(get_dtype("float"), redop, 8, seed=1)
    rows = [p.values(r, 0, 256) for r in range(8)]
    for a in range(8):
        for b in range(a + 1, 8):
            assert not np.array_equal(rows[a], rows[b])
    assert not all(np.all(row == 1) for row in rows)


def test_seeds_change_the_data():
    dt = get_dtype("float")
    assert not np.array_equal(Pattern(dt, "sum", 4, 1).values(0, 0, 64), Pattern(dt, "sum", 4, 2).values(0, 0, 64))


def test_count_wrong_counts_flipped_bits():
    dt = get_dtype("float")
    exp = Pattern(dt, "sum", 4, 1).reduced(0, 100)
    got = exp.copy()
    got.view(np.uint32)[[3, 50]] ^= 1
    assert count_wrong(got, exp, dt) == 2
    assert count_wrong(got[:10], exp, dt) == 100  # wrong length: everything is wrong


def test_poison_pattern_is_never_a_check_value():
    # 0xA5 bytes: the float is not an integer, so an op that leaves the output untouched always fails.
    poison = np.frombuffer(bytes([0xA5] * 4), dtype=np.float32)[0]
    assert poison != np.round(poison)


@pytest.mark.parametrize("name", ["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce",
                                  "sendrecv"])
def test_expected_outputs_follow_from_inputs(name):
    """Simulate each op in numpy from every rank's declared input; compare with its declared expectation."""
    op, n, dt = OPS[name], 4, get_dtype("int32")
    redop = "sum" if op.reduces else "none"
    p = Pattern(dt, redop, n, seed=5)
    lays = [op.layout(4096, dt.itemsize, n, r) for r in range(n)]
    ins = [op.input(p, lays[r], r, n, 1) for r in range(n)]
    for r in range(n):
        exp = op.expected(p, lays[r], r, n, 1)
        if name == "all_reduce":
            sim = sum(x.astype(np.int64) for x in ins).astype(np.int32)
        elif name == "reduce":
            sim = sum(x.astype(np.int64) for x in ins).astype(np.int32) if r == 1 else None
        elif name == "all_gather":
            sim = np.concatenate(ins)
        elif name == "reduce_scatter":
            c = lays[r].count
            sim = sum(x[r * c:(r + 1) * c].astype(np.int64) for x in ins).astype(np.int32)
        elif name == "all_to_all":
            c = lays[r].count
            sim = np.concatenate([ins[q][r * c:(r + 1) * c] for q in range(n)])
        elif name == "broadcast":
            sim = ins[1]
        else:
            sim = ins[(r - 1) % n]
        if sim is None:
            assert exp is None
        else:
            np.testing.assert_array_equal(exp, sim)
