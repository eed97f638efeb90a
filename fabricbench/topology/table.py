"""Plain-text tables for the terminal (fixed-width columns, no colour: pipes and logs read them as they are)."""

from __future__ import annotations


def render(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if x < 1 else f"{x:.1f}"
