"""Message sizes as nccl-tests takes them: `-b 8 -e 128M -f 2`, K/M/G suffixes binary (1K = 1024 B)."""

from __future__ import annotations

import re

from fabricbench.errors import UsageError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int, option: str = "size") -> int:
    """'64K' -> 65536; '1G' -> 1073741824; '4096' -> 4096. Decimal fractions are refused (sizes are bytes)."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE_RE.match(str(text))
        if not match:
            raise UsageError(f"{option}: '{text}' is not a size; use bytes with an optional K, M or G suffix "
                             "(binary: 1K = 1024), for example 8, 64K, 128M, 1G")
        value = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if value <= 0:
        raise UsageError(f"{option}: size must be at least 1 byte, got '{text}'")
    return value


def format_size(nbytes: int) -> str:
    """Short human form for messages: 1048576 -> '1 MiB'."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= factor and nbytes % factor == 0:
            return f"{nbytes // factor} {unit}"
    return f"{nbytes} B"


MAX_SIZES = 4096  # sizes in one sweep: every size is a table row, a results row per rank and minutes of run


def size_sweep(min_bytes: int, max_bytes: int, factor: int | None = None, step: int | None = None) -> list[int]:
    """The sizes nccl-tests visits: multiply by `factor` (-f), or add `step` (-i), from min to max inclusive."""
    if min_bytes > max_bytes:
        raise UsageError(f"--minbytes ({min_bytes} B) is larger than --maxbytes ({max_bytes} B); "
                         "swap them or raise -e")
    if factor is not None and step is not None:
        raise UsageError("give either -f/--stepfactor or -i/--stepbytes, not both")
    sizes = [min_bytes]
    if step is not None:
        if step <= 0:
            raise UsageError(f"-i/--stepbytes must be positive, got {step}")
        count = (max_bytes - min_bytes) // step + 1  # known before the list is built: -b 1K -e 1T -i 1 is refused
        if count > MAX_SIZES:
            raise UsageError(f"-b/-e/-i give {count} sizes, more than the {MAX_SIZES} one run may have; "
                             "raise -i/--stepbytes or use -f/--stepfactor")
        while sizes[-1] + step <= max_bytes:
            sizes.append(sizes[-1] + step)
        return sizes
    factor = 2 if factor is None else factor
    if factor < 2 and min_bytes != max_bytes:
        raise UsageError(f"-f/--stepfactor must be 2 or more, got {factor}")
    while min_bytes != max_bytes and sizes[-1] * factor <= max_bytes:
        sizes.append(sizes[-1] * factor)
    return sizes
