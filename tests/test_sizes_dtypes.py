import pytest

from fabricbench.engine.dtypes import DTYPES, get_dtype, get_redop
from fabricbench.engine.sizes import format_size, parse_size, size_sweep
from fabricbench.errors import UsageError


@pytest.mark.parametrize("text,value", [("8", 8), ("1K", 1024), ("64k", 65536), ("128M", 128 << 20),
                                        ("1G", 1 << 30), ("2GB", 2 << 30), ("4KiB", 4096), (4096, 4096)])
def test_parse_size_binary_suffixes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "1.5M", "-4", "0", "12Q", "M"])
def test_parse_size_rejects_bad_strings(bad):
    with pytest.raises(UsageError) as err:
        parse_size(bad, "-b")
    assert "-b" in str(err.value)


def test_sweep_factor_and_step_like_nccl_tests():
    assert size_sweep(8, 128, 2) == [8, 16, 32, 64, 128]
    assert size_sweep(8, 100, 4) == [8, 32]
    assert size_sweep(1024, 4096, step=1024) == [1024, 2048, 3072, 4096]
    assert size_sweep(64, 64) == [64]


def test_sweep_min_larger_than_max_is_usage_error():
    with pytest.raises(UsageError, match="larger than"):
        size_sweep(1 << 20, 1024, 2)


def test_format_size():
    assert format_size(1 << 20) == "1 MiB"
    assert format_size(1000) == "1000 B"


def test_dtypes_and_aliases():
    assert get_dtype("fp16").name == "half"
    assert get_dtype("bf16").name == "bfloat16"
    assert get_dtype("float32").itemsize == 4
    assert {d.itemsize for d in DTYPES.values()} == {1, 2, 4, 8}
    with pytest.raises(UsageError, match="unknown dtype"):
        get_dtype("complex64")
    assert get_redop("MAX") == "max"
    with pytest.raises(UsageError, match="unknown reduction"):
        get_redop("xor")
