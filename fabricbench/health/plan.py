"""What a night's sweep can cover within a time budget.

Every pair (circle method: n-1 rounds of n/2 concurrent pairs, n rounds for odd n) when that fits; otherwise
an exact rotation: night t runs K consecutive rounds of the same circle schedule (the sweep's `--pattern
rotation --partners K --seed t`), so every node meets K partners it has not met in this cycle and any
ceil(rounds/K) consecutive nights meet every pair, the least any schedule of K rounds a night can do (a night
covers n*K/2 of the n(n-1)/2 pairs). Yesterday's suspects need no special pairing: tonight they meet K new
partners, which is what a k-of-m confirmation with different partners asks for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fabricbench.errors import UsageError


@dataclass
class Plan:
    nodes: list[str]
    pattern: str  # circle | rotation
    partners: int  # rounds
    seed: int  # rotation: the slice (night) of the circle schedule
    pairs: list[tuple[str, str]]
    round_s: float
    overhead_s: float
    gpus_per_node: int
    suspects: list[str] = field(default_factory=list)
    suspect_pairs: int = 0
    new_pairs: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rounds(self) -> int:
        return self.partners

    @property
    def est_wall_s(self) -> float:
        return self.overhead_s + self.rounds * self.round_s

    @property
    def gpu_hours(self) -> float:
        return len(self.nodes) * self.gpus_per_node * self.est_wall_s / 3600.0

    @property
    def min_nights_all_pairs(self) -> int:
        n = len(self.nodes)
        return 1 if self.pattern == "circle" else math.ceil(circle_rounds(n) / max(self.partners, 1))

    def describe(self) -> str:
        n = len(self.nodes)
        total = n * (n - 1) // 2
        what = (f"all {total} pairs (circle, {self.rounds} rounds)" if self.pattern == "circle" else
                f"rotation-{self.partners}: {len(self.pairs)} of {total} pairs in {self.rounds} rounds (slice {self.seed} of the circle "
                f"schedule; {self.new_pairs} not met recently, {self.suspect_pairs} with yesterday's suspects; every pair "
                f"within any {self.min_nights_all_pairs} consecutive nights)")
        lines = [f"plan: {n} nodes, {what}",
                 f"estimate: {self.est_wall_s:.0f} s wall ({self.overhead_s:.0f} s fixed + {self.rounds} x "
                 f"{self.round_s:.1f} s per round), {self.gpu_hours:.3f} GPU-hours ({self.gpus_per_node} GPU(s)/node)"]
        if self.suspects:
            lines.append(f"retest: suspects from the last run: {', '.join(self.suspects)}")
        lines += [f"note: {x}" for x in self.notes]
        return "\n".join(lines)


def circle_rounds(n: int) -> int:
    return n - 1 if n % 2 == 0 else n


def make_plan(nodes: list[str], budget_s: float, round_s: float, overhead_s: float, gpus_per_node: int = 0,
              recently_met: set[tuple[str, str]] | None = None, suspects: list[str] | None = None,
              night: int = 0) -> Plan:
    from fabricbench.slurm.planning import make_rounds

    n = len(nodes)
    if n < 2:
        raise UsageError(f"a health sweep needs at least 2 nodes, got {n}")
    if round_s <= 0:
        raise UsageError("the estimated time per round must be positive")
    fits = int((budget_s - overhead_s) // round_s)
    if fits < 1:
        raise UsageError(f"--budget {budget_s:.0f} s does not fit one round: {overhead_s:.0f} s fixed cost + "
                         f"{round_s:.1f} s per round; give a larger budget")
    recently_met = recently_met or set()
    suspects = sorted(set(suspects or []) & set(nodes))
    if fits >= circle_rounds(n):
        rounds = make_rounds(n, "circle", 1, 1, 0)
        pairs = [(nodes[a], nodes[b]) for r in rounds for a, b in r["pairs"]]
        return Plan(nodes, "circle", circle_rounds(n), 0, pairs, round_s, overhead_s, gpus_per_node, suspects,
                    sum(1 for p in pairs if set(p) & set(suspects)), sum(1 for p in pairs if p not in recently_met))
    rounds = make_rounds(n, "rotation", fits, 1, night)
    pairs = [tuple(sorted((nodes[a], nodes[b]))) for r in rounds for a, b in r["pairs"]]
    return Plan(nodes, "rotation", fits, night, pairs, round_s, overhead_s, gpus_per_node, suspects,
                sum(1 for p in pairs if set(p) & set(suspects)), sum(1 for p in pairs if p not in recently_met),
                [f"all pairs need {circle_rounds(n)} rounds, {fits} fit the budget"])
