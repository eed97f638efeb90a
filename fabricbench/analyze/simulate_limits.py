"""How big a `fabricbench simulate` may be: the rows it would write are counted before any is built."""

from __future__ import annotations

from fabricbench.errors import UsageError

MAX_SIM_NODES = 16384
MAX_SIM_ROWS = 40_000_000  # about 4 GB of memory while the frame is built


def check_simulation(nodes: int, leaves: int, spines: int, rails: int, gpus: int, repeats: int, nsizes: int,
                     pattern: str) -> None:
    for value, option, hi in ((nodes, "--nodes", MAX_SIM_NODES), (leaves, "--leaves", MAX_SIM_NODES),
                              (spines, "--spines", 4096), (rails, "--rails", 64), (gpus, "--gpus", 64),
                              (repeats, "--repeats", 1000)):
        if value > hi:
            raise UsageError(f"simulate: {option} {value} is above the limit {hi}")
    if not 1 <= nsizes <= 64:
        raise UsageError(f"simulate: --sizes gives {nsizes} sizes; give 1 to 64")
    if pattern == "fitted" and nodes > 512:
        raise UsageError(f"simulate: --pattern fitted packs rounds pair by pair; up to 512 nodes (got {nodes})")
    partners = nodes - 1
    if pattern.startswith("random-") and pattern[7:].isdigit():
        partners = min(partners, int(pattern[7:]))
    rows = nodes * partners * nsizes * repeats * rails + nodes * gpus * gpus
    if rows > MAX_SIM_ROWS:
        raise UsageError(f"simulate: {nodes} nodes x {partners} partners x {nsizes} sizes x {repeats} repeats x "
                         f"{rails} rails is {rows:,} rows, above the {MAX_SIM_ROWS:,} limit; use fewer nodes, "
                         "--pattern random-K, or fewer sizes")
