"""What the GPU's L2 cache does to a figure that claims to be device memory, and how plausible a latency is.

- Copies: a buffer that fits in L2 can be served from it on every loop after the first, so its GB/s is an L2
  figure, not a device-memory one. Such cells are labelled (never silently reported as memory bandwidth).
- Latency: before each timed pointer chase a scratch buffer of EVICT_FACTOR x L2 is written on the GPUs
  involved, so the chain is cold; the result is then compared with a wide band per GPU generation. A value
  outside the band is labelled, not failed: the band is a plausibility check, not a goal.

Bands (ns per dependent load, 128-byte stride, random order, one thread). Published pointer-chase figures put
an L2 hit on A100/H100 at about 150-300 ns and an HBM access at several hundred ns (H100 ~ 400-700 ns):
Chips and Cheese, "Nvidia's H100: Funny L2, and Tons of Bandwidth" (2023,
https://chipsandcheese.com/2023/07/02/nvidias-h100-funny-l2-and-tons-of-bandwidth/) and Luo et al.,
"Benchmarking and Dissecting the Nvidia Hopper GPU Architecture" (arXiv:2402.13499). The lower bound sits
above an L2 hit, so a chase served from L2 reads as out of band; the upper bound leaves room for TLB misses
and clocks. A peer chase adds the link's round trip (NVLink: hundreds of ns; PCIe: about a microsecond).
"""

from __future__ import annotations

EVICT_FACTOR = 2  # scratch written before a timed chase: >= 2 x the L2 of each GPU involved

# compute capability major -> (low, high) ns per access, own memory
LOCAL_BAND_NS: dict[int, tuple[float, float]] = {8: (350.0, 1000.0), 9: (350.0, 1000.0), 10: (350.0, 1200.0)}
PEER_BAND_NS: dict[int, tuple[float, float]] = {8: (500.0, 5000.0), 9: (500.0, 5000.0), 10: (500.0, 5000.0)}
GENERATION = {8: "Ampere", 9: "Hopper", 10: "Blackwell"}


def _major(cc: str) -> int | None:
    try:
        return int(str(cc).split(".")[0])
    except ValueError:
        return None


def evict_bytes(*l2_sizes: int) -> int:
    """Scratch to write before a timed chase: EVICT_FACTOR x the largest L2 involved (16-byte multiple)."""
    biggest = max([0, *l2_sizes])
    return -(-EVICT_FACTOR * biggest // 16) * 16


def latency_band(cc: str, peer: bool) -> tuple[float, float] | None:
    major = _major(cc)
    table = PEER_BAND_NS if peer else LOCAL_BAND_NS
    return table.get(major) if major is not None else None


def judge_latency(ns: float, cc: str, peer: bool) -> tuple[bool | None, str]:
    """(in band, note). None when there is no band for this generation (nothing compared: not judged)."""
    band = latency_band(cc, peer)
    where = "peer memory" if peer else "own memory"
    if band is None:
        return None, f"no plausibility band for compute capability {cc} ({where}): not judged"
    lo, hi = band
    gen = GENERATION.get(_major(cc) or 0, f"cc {cc}")
    if ns < lo:
        return False, (f"{ns:.0f} ns is below the {gen} {where} band {lo:.0f}-{hi:.0f} ns: reads like cache hits, "
                       "not a memory access")
    if ns > hi:
        return False, f"{ns:.0f} ns is above the {gen} {where} band {lo:.0f}-{hi:.0f} ns: unusually slow"
    return True, f"within the {gen} {where} band {lo:.0f}-{hi:.0f} ns"


def fits_in_l2(size_bytes: int, l2_bytes: int) -> bool:
    """A copy of `size_bytes` (source + destination) that L2 can hold across loops."""
    return l2_bytes > 0 and 2 * size_bytes <= l2_bytes * EVICT_FACTOR


def l2_note(size_bytes: int, l2_bytes: int) -> str | None:
    if not fits_in_l2(size_bytes, l2_bytes):
        return None
    return (f"L2-resident: {size_bytes / 2**20:.1f} MiB per buffer fits in the {l2_bytes / 2**20:.0f} MiB L2, so this "
            f"is an L2 figure, not device memory; use a size above {l2_bytes / 2**20:.0f} MiB for memory bandwidth")
