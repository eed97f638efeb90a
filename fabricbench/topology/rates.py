"""Link rates with explicit units. Internally every rate is decimal GB/s (1e9 bytes per second), per direction."""

from __future__ import annotations

import math
import re

_RATE = re.compile(r"^\s*((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?)\s*([A-Za-z/]+)\s*$")
_PREFIX = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
ALLOWED = "a number with a unit: Gb/s, Gbit/s, Mbit, Mb/s (bits) or GB/s, MB/s (bytes), e.g. '400 Gb/s', '25 GB/s', '400mbit'"


def parse_rate(value: object) -> float:
    """'400 Gb/s' → 50.0 (GB/s). Bare numbers are refused: a rate without a unit is the classic factor-8 mistake."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"{value!r} has no unit; write {ALLOWED}")
    if re.fullmatch(r"\s*[-+]?[0-9.eE+-]+\s*", value):
        raise ValueError(f"{value!r} has no unit; write {ALLOWED}")
    match = _RATE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a rate; write {ALLOWED}")
    number = float(match.group(1))  # float() saturates to inf instead of raising
    unit = match.group(2)
    prefix, rest = unit[:1].lower(), unit[1:]
    if prefix not in _PREFIX:
        raise ValueError(f"{value!r}: unknown unit {unit!r}; write {ALLOWED}")
    if rest in ("B/s", "Byte/s", "byte/s"):
        bytes_per_s = number * _PREFIX[prefix]
    elif rest.lower() in ("bit", "bit/s", "bits/s") or rest == "b/s":
        bytes_per_s = number * _PREFIX[prefix] / 8
    else:
        raise ValueError(f"{value!r}: unknown or ambiguous unit {unit!r} (bps/Bps mean different things in "
                         f"different tools); write {ALLOWED}")
    if not math.isfinite(bytes_per_s) or bytes_per_s <= 0:
        raise ValueError(f"{value!r}: a rate must be positive and finite")
    return bytes_per_s / 1e9


def format_rate(gbytes: float) -> str:
    """50.0 → '400 Gb/s'; small rates in Mb/s. Round-trips through parse_rate."""
    bits = gbytes * 8
    if bits >= 1:
        return f"{bits:g} Gb/s"
    return f"{bits * 1000:g} Mb/s"


def pcie_rate(generation: int, width: int) -> float:
    """Per-direction PCIe payload signalling rate in GB/s: transfer rate × encoding / 8 × lanes (PCI-SIG specs)."""
    per_lane = {1: 2.5 * 0.8 / 8, 2: 5.0 * 0.8 / 8, 3: 8.0 * 128 / 130 / 8, 4: 16.0 * 128 / 130 / 8,
                5: 32.0 * 128 / 130 / 8, 6: 64.0 * 242 / 256 / 8}[generation]
    return per_lane * width


PCIE_GT_S = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}


def pcie_generation_from_speed(text: str) -> int | None:
    """'32.0 GT/s PCIe', '16 GT/s', '8.0 GT/s' → generation; None when unreadable."""
    match = re.search(r"([0-9]+(?:\.[0-9]+)?)\s*GT/s", text or "")
    if not match:
        return None
    speed = float(match.group(1))
    for gen, gts in PCIE_GT_S.items():
        if abs(gts - speed) < 0.01:
            return gen
    return None


def sig(x: float, digits: int = 6) -> float:
    """Round to significant digits (rates span 0.025 GB/s in the lab to 1000s of GB/s)."""
    return float(f"{x:.{digits}g}")
