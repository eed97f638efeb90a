"""Plans for the pair runner: the schedule for a node list, and the retest of suspect pairs after a sweep.

Stdlib only (this runs in the batch script between steps): suspects are found from the ranks' JSON lines.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
from collections import defaultdict
from pathlib import Path

from fabricbench.errors import UsageError
from fabricbench.slurm import schedule
from fabricbench.slurm.sweep import Plan, records_dir

PATTERNS = ("circle", "random", "rotation")


def make_rounds(n: int, pattern: str, partners: int, repeat: int, seed: int) -> list[dict]:
    if pattern not in PATTERNS:
        raise UsageError(f"--pattern '{pattern}': choose circle (every pair, n-1 rounds), random (--partners K) "
                         "or rotation (--partners K rounds of the circle, slice --seed)")
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    rounds: list[dict] = []
    for rep in range(repeat):
        if pattern == "circle":
            base = schedule.circle(n)
        elif pattern == "rotation":
            if partners < 1:
                raise UsageError(f"--partners must be at least 1, got {partners}")
            base = schedule.rotation(n, partners, seed)
        else:
            if partners < 1:
                raise UsageError(f"--partners must be at least 1, got {partners}")
            base = schedule.random_partners(n, partners, seed + rep)
        for pairs in base:
            rounds.append({"round": len(rounds), "repeat": rep, "pairs": [list(p) for p in pairs]})
    return rounds


def port_base_for_job(job_id: int) -> int:
    """A block of ports per job (ranks add their rail) in 61000-63999: above Linux's ephemeral range
    (32768-60999) and the engine's per-step rendezvous ports (20000-59999), so nothing else takes it."""
    return 61000 + (job_id * 97) % 2900


def free_port_block(count: int, start: int = 31000, tries: int = 200) -> int:
    """A base port whose next `count` ports are free on 127.0.0.1 (local mode)."""
    import random

    rng = random.Random(os.getpid())
    for _ in range(tries):
        base = rng.randrange(start, 60000 - count)
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise UsageError(f"no block of {count} free local ports found")


def load_records(out_dir: str | os.PathLike, phase: str | None = None) -> list[dict]:
    records: list[dict] = []
    pattern = f"{phase}-rank*.jsonl" if phase else "*-rank*.jsonl"
    for path in sorted(records_dir(out_dir).glob(pattern)):
        for line in path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: everything before it is kept
    return records


def pair_bandwidth(records: list[dict]) -> dict[tuple, float]:
    """(phase, round, repeat, node_a, node_b, rail) -> the lower of a->b, b->a at the largest size measured."""
    best_size: dict[tuple, int] = {}
    per: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in records:
        if r.get("kind") != "row" or r.get("direction") == "pingpong" or r.get("algbw_gbps") is None:
            continue
        key = (r["phase"], r["round"], r.get("repeat", 0), r["node_a"], r["node_b"], r.get("rail", 0))
        if r["size_bytes"] > best_size.get(key, -1):
            best_size[key] = r["size_bytes"]
            per[key] = {}
        if r["size_bytes"] == best_size[key]:
            per[key][r["direction"]] = r["algbw_gbps"]
    return {k: min(v.values()) for k, v in per.items() if v}


def find_suspects(records: list[dict], below: float = 0.8, latency_factor: float = 2.1) -> list[tuple[str, str, int]]:
    """Pairs (node_a, node_b, rail) below `below` x the median pair bandwidth, or with latency above
    `latency_factor` x the lowest latency (ClusterKit's rule uses the best pair; the median is steadier on a
    shared fabric)."""
    bw = pair_bandwidth(records)
    out: set[tuple[str, str, int]] = set()
    if bw:
        median = statistics.median(bw.values())
        out |= {(k[3], k[4], k[5]) for k, v in bw.items() if v < below * median}
    lat = [(r["node_a"], r["node_b"], r.get("rail", 0), r["latency_us"]) for r in records
           if r.get("kind") == "row" and r.get("direction") == "pingpong" and r.get("latency_us")
           and r["size_bytes"] == min(x["size_bytes"] for x in records if x.get("kind") == "row")]
    if lat:
        low = min(x[3] for x in lat)
        out |= {(a, b, rail) for a, b, rail, v in lat if v > latency_factor * low}
    return sorted(out)


MAX_RETEST_PATHS = 64  # suspect paths a retest runs again (`--retest-rounds`), most suspect first


def retest_plan(plan: Plan, records: list[dict], below: float = 0.8, seed: int = 0, repeat_suspects: int = 0,
                max_suspects: int = MAX_RETEST_PATHS, ranked: list[tuple[str, str]] | None = None) -> Plan | None:
    """A plan that measures each suspect pair's nodes again against new, healthy partners and, with
    `repeat_suspects`, the suspect pairs themselves that many more times: the first `max_suspects` of `ranked`
    (the analyzer's suspect paths, most suspect first) or, without it, the lowest pairs; None if there is
    nothing to retest."""
    suspects = find_suspects(records, below)
    if not suspects and not ranked:
        return None
    bw = pair_bandwidth(records)
    lowest: dict[tuple[str, str], float] = {}
    for k, v in bw.items():
        lowest[(k[3], k[4])] = min(v, lowest.get((k[3], k[4]), v))
    index = {name: i for i, name in enumerate(plan.nodes)}
    done_nodes = {r["node"] for r in records if r.get("kind") == "done"}
    # Healthy partners: nodes that finished and whose median over their pairs is not low. A node of a suspect
    # pair can be a healthy partner for another suspect (on a busy fabric most pairs may look suspect).
    per_node: dict[str, list[float]] = defaultdict(list)
    for key, value in pair_bandwidth(records).items():
        per_node[key[3]].append(value)
        per_node[key[4]].append(value)
    medians = {n: statistics.median(v) for n, v in per_node.items()}
    overall = statistics.median(medians.values()) if medians else 0.0
    healthy = [index[n] for n in done_nodes if n in index and medians.get(n, 0.0) >= below * overall]
    tested = [tuple(p) for rnd in plan.rounds for p in rnd["pairs"]]
    pairs = schedule.retest_pairs(len(plan.nodes), [(index[a], index[b]) for a, b, _ in suspects
                                                     if a in index and b in index], tested, healthy, seed)
    if ranked is not None:
        again = list(dict.fromkeys(tuple(sorted((a, b), key=index.get)) for a, b in ranked
                                   if a in index and b in index and a != b))[:max_suspects]
    else:
        again = sorted({(a, b) for a, b, _ in suspects if a in index and b in index},
                       key=lambda p: lowest.get(p, 0.0))[:max_suspects]
    fabric = plan.extra.get("fabric")
    repeats = schedule.repeat_rounds([(index[a], index[b]) for a, b in again], repeat_suspects, seed,
                                     leaves=fabric.get("leaves") if fabric else None)
    if not pairs and not repeats:
        return None
    first = max((r["round"] for r in plan.rounds), default=-1) + 1
    packed = schedule.pack(pairs)
    if fabric and fabric.get("fitted"):  # the retest keeps the sweep's uplink limits
        from fabricbench.slurm.fabric_map import fit_rounds

        packed = fit_rounds(packed, fabric["leaves"], fabric["uplink_pairs"])
    packed += repeats  # at most one pair per leaf in each: within any uplink's limit
    rounds = [{"round": first + i, "repeat": 0, "pairs": [list(p) for p in rnd]}
              for i, rnd in enumerate(packed)]
    data = dict(plan.__dict__)
    data.update(phase="retest", rounds=rounds, extra={**plan.extra, "suspects": [list(s) for s in suspects]})
    return Plan(**data)


def plan_path(out_dir: str | os.PathLike, phase: str = "sweep") -> Path:
    return Path(out_dir) / ("plan.json" if phase == "sweep" else f"plan-{phase}.json")
