"""Which node pairs run in which round: the circle method, random partners, repeats, and retests.

Nodes are indices 0..n-1 (positions in the step's node list). A round is a list of disjoint pairs; the
pairs of one round run at the same time. Pairs are written (a, b) with a < b.

- `circle(n)`: every pair exactly once; even n: n-1 rounds of n/2 pairs; odd n: n rounds of (n-1)/2 pairs
  with one node idle per round (a "bye" is added and its partner sits out).
- `random_partners(n, k, seed)`: k rounds, each a random matching, avoiding pairs already used when possible,
  so each node meets about k different partners (imbue's cluster-health style).
- `rotation(n, k, night)`: night `night`'s k consecutive rounds of `circle(n)` (wrapping), so that any
  ceil(rounds/k) consecutive nights meet every pair: an exact rotation for sweeps that cannot run all pairs at once.
- `pack(pairs)`: any list of pairs into as few rounds of disjoint pairs as a greedy packing finds.
- `retest_pairs(...)`: for every suspect pair (a, b), a and b each get a partner they have not met, chosen among
  nodes that looked healthy, so a bad node shows up again and a bad path does not (k-of-m confirmation).
- `repeat_rounds(pairs, k, seed)`: the suspect pairs themselves k more times, with different co-runners each time,
  so that a path's deficit can be told from the noise by its own repeated measurements.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

Pair = tuple[int, int]


def _norm(a: int, b: int) -> Pair:
    return (a, b) if a < b else (b, a)


def circle(n: int) -> list[list[Pair]]:
    if n < 2:
        return []
    ids: list[int | None] = list(range(n)) + ([None] if n % 2 else [])
    m = len(ids)
    rounds: list[list[Pair]] = []
    for _ in range(m - 1):
        pairs = []
        for i in range(m // 2):
            a, b = ids[i], ids[m - 1 - i]
            if a is not None and b is not None:
                pairs.append(_norm(a, b))
        rounds.append(sorted(pairs))
        ids = [ids[0], ids[-1], *ids[1:-1]]  # keep the first fixed, rotate the rest
    return rounds


def rotation(n: int, k: int, night: int) -> list[list[Pair]]:
    """Rounds night*k .. night*k + k - 1 of the circle schedule, modulo its length."""
    base = circle(n)
    if not base or k < 1:
        return []
    start = (night * k) % len(base)
    return [base[(start + i) % len(base)] for i in range(min(k, len(base)))]


def random_partners(n: int, k: int, seed: int = 0) -> list[list[Pair]]:
    """k rounds of random matchings; repeats a pair only when no fresh matching is found in a few tries."""
    if n < 2 or k < 1:
        return []
    rng = random.Random(seed)
    used: set[Pair] = set()
    rounds = []
    for _ in range(k):
        best: list[Pair] | None = None
        best_fresh = -1
        for _attempt in range(50):
            order = list(range(n))
            rng.shuffle(order)
            pairs = [_norm(order[i], order[i + 1]) for i in range(0, n - 1, 2)]
            fresh = sum(p not in used for p in pairs)
            if fresh > best_fresh:
                best, best_fresh = pairs, fresh
            if fresh == len(pairs):
                break
        assert best is not None
        used.update(best)
        rounds.append(sorted(best))
    return rounds


def pack(pairs: Iterable[Pair]) -> list[list[Pair]]:
    """Greedy: each pair goes into the first round where neither node is busy."""
    rounds: list[list[Pair]] = []
    busy: list[set[int]] = []
    for a, b in pairs:
        for i, nodes in enumerate(busy):
            if a not in nodes and b not in nodes:
                rounds[i].append(_norm(a, b))
                nodes.update((a, b))
                break
        else:
            rounds.append([_norm(a, b)])
            busy.append({a, b})
    return [sorted(r) for r in rounds]


def repeat_rounds(pairs: Sequence[Pair], times: int, seed: int = 0,
                  leaves: Sequence[str | None] | None = None) -> list[list[Pair]]:
    """Each pair `times` more times, in rounds that differ in their co-runners: each repetition shuffles the
    pairs and packs them into rounds of at most sqrt(pairs), since a pair rerun with the same co-runners under
    static routing repeats the same collision and is not a new measurement of its path. With `leaves` (each
    node's leaf), no two pairs of a round touch the same leaf: suspects are often the pairs that collided on
    one spine link, and rerun side by side they would collide again."""
    pairs = [_norm(*p) for p in dict.fromkeys(_norm(*p) for p in pairs)]
    if not pairs or times < 1:
        return []
    rng = random.Random(seed)
    width = max(1, math.isqrt(len(pairs) - 1) + 1)

    def touched(p: Pair) -> set:
        if leaves is None:
            return set()
        return {leaves[x] for x in p if leaves[x] is not None}

    rounds: list[list[Pair]] = []
    for _ in range(times):
        order = pairs[:]
        rng.shuffle(order)
        mine: list[list[Pair]] = []
        used: list[set] = []
        for a, b in order:
            mark = touched((a, b))
            for rd, seen in zip(mine, used):
                if len(rd) < width and all(a not in p and b not in p for p in rd) and not (mark & seen):
                    rd.append((a, b))
                    seen |= mark
                    break
            else:
                mine.append([(a, b)])
                used.append(set(mark))
        rounds += [sorted(r) for r in mine]
    return rounds


def retest_pairs(n: int, suspects: Sequence[Pair], tested: Iterable[Pair], healthy: Iterable[int],
                 seed: int = 0) -> list[Pair]:
    """New pairs that re-measure each node of each suspect pair against a partner it has not met yet."""
    rng = random.Random(seed)
    met: set[Pair] = {_norm(*p) for p in tested}
    good = [i for i in sorted(set(healthy)) if 0 <= i < n]
    load = {i: 0 for i in range(n)}  # spread the retests over the healthy nodes
    out: list[Pair] = []
    for a, b in suspects:
        for node in (a, b):
            candidates = [c for c in good if c not in (a, b) and _norm(node, c) not in met]
            if not candidates:
                continue
            rng.shuffle(candidates)
            c = min(candidates, key=lambda x: load[x])
            pair = _norm(node, c)
            met.add(pair)
            load[c] += 1
            out.append(pair)
    return out


def all_pairs(rounds: Iterable[Iterable[Pair]]) -> list[Pair]:
    return [p for r in rounds for p in r]
