"""How many nights `health run`'s plan needs until every pair was met (pairs of the last 90 runs count as met,
as in fabricbench.health.runner), against the lower bound ceil(circle rounds / K) (ceil((n-1)/K) for even n):
a night of K rounds covers n*K/2 of the n(n-1)/2 pairs.

    python benchmarks/health_rotation.py     # 16 nodes K=4, 64 nodes K=4, 256 nodes K=8
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabricbench.health import plan as plan_mod  # noqa: E402


def nights(n: int, budget_s: float, round_s: float = 10, fixed_s: float = 20) -> tuple[int, int, int]:
    nodes = [f"n{i:04d}" for i in range(n)]
    met, recent, night, total = set(), [], 0, n * (n - 1) // 2
    p = None
    while len(met) < total and night < 1000:
        p = plan_mod.make_plan(nodes, budget_s, round_s, fixed_s,
                               recently_met=set().union(*recent[-90:]) if recent else set(), night=night)
        pairs = {tuple(sorted(x)) for x in p.pairs}
        met |= pairs
        recent.append(pairs)
        night += 1
    return p.partners, night, p.min_nights_all_pairs


if __name__ == "__main__":
    print("| nodes | K (rounds that fit) | nights until every pair met | lower bound |")
    print("|---|---|---|---|")
    for n, budget in ((16, 60), (64, 60), (256, 100)):
        k, got, bound = nights(n, budget)
        print(f"| {n} | {k} | {got} | {bound} |")
