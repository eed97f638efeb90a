"""Open MPI 4.1 coll tuned dynamic rules file (read by ompi_coll_tuned_read_rules_config_file in
ompi/mca/coll/tuned/coll_tuned_dynamic_file.c; applied by coll_tuned_dynamic_rules.c).

The file is a stream of integers (anything from `#` to the end of the line is skipped):

    <number of collectives>
    per collective:    <collective id (COLLTYPE)>  <number of communicator sizes>
    per comm size:     <communicator size>  <number of message sizes>
    per message size:  <message size in bytes>  <algorithm>  <fan-in/out>  <segment size in bytes>

Communicator sizes and message sizes are listed in increasing order; the first message size of each
communicator size must be 0. Open MPI uses the last communicator-size entry <= the communicator's size (the
first entry when all are larger), then the last message-size entry <= the call's message size. Algorithm 0
falls back to Open MPI's compiled-in decision. The rules apply only with coll_tuned_use_dynamic_rules=1 and
coll_tuned_dynamic_rules_filename=<file>.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fabricbench.errors import UsageError


@dataclass(frozen=True)
class MsgRule:
    msg_size: int
    algorithm: int
    faninout: int = 0
    segsize: int = 0


# {collective id: {communicator size: [MsgRule, ...]}}
Rules = dict[int, dict[int, list[MsgRule]]]


def render(rules: Rules, names: dict[int, str] | None = None, header: list[str] | None = None) -> str:
    names = names or {}
    out = [f"# {h}" for h in (header or [])]
    out.append(f"{len(rules)}  # number of collectives")
    for coll_id in sorted(rules):
        comms = rules[coll_id]
        out.append(f"{coll_id}  # collective id: {names.get(coll_id, '?')}")
        out.append(f"{len(comms)}  # number of communicator sizes")
        for comm_size in sorted(comms):
            msgs = sorted(comms[comm_size], key=lambda m: m.msg_size)
            if not msgs or msgs[0].msg_size != 0:
                raise ValueError("the first message size of each communicator size must be 0 (Open MPI requires it)")
            out.append(f"{comm_size}  # communicator size")
            out.append(f"{len(msgs)}  # number of message sizes")
            for m in msgs:
                out.append(f"{m.msg_size} {m.algorithm} {m.faninout} {m.segsize}  # bytes, algorithm, fan-in/out, segment size")
    return "\n".join(out) + "\n"


def _numbers(text: str) -> list[int]:
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    tokens = body.split()
    for tok in tokens:
        if not re.fullmatch(r"-?\d+", tok):
            raise UsageError(f"Open MPI rules file: '{tok}' is not a number")
    return [int(t) for t in tokens]


def parse(text: str) -> Rules:
    """Read a rules file with Open MPI's checks (counts, non-negative values, message sizes from 0)."""
    nums = iter(_numbers(text))

    def take(what: str) -> int:
        try:
            value = next(nums)
        except StopIteration:
            raise UsageError(f"Open MPI rules file ends early: expected {what}") from None
        if value < 0:
            raise UsageError(f"Open MPI rules file: {what} is negative ({value})")
        return value

    rules: Rules = {}
    for _ in range(take("the number of collectives")):
        coll = take("a collective id")
        comms: dict[int, list[MsgRule]] = {}
        for _ in range(take("the number of communicator sizes")):
            comm = take("a communicator size")
            msgs = []
            for i in range(take("the number of message sizes")):
                m = MsgRule(take("a message size"), take("an algorithm"), take("a fan-in/out"), take("a segment size"))
                if i == 0 and m.msg_size != 0:
                    raise UsageError("Open MPI rules file: the first message size of a communicator size must be 0")
                msgs.append(m)
            comms[comm] = msgs
        rules[coll] = comms
    return rules


def lookup(rules: Rules, coll_id: int, comm_size: int, msg_size: int) -> MsgRule | None:
    """The rule Open MPI applies (None: no rule for this collective)."""
    comms = rules.get(coll_id)
    if not comms:
        return None
    chosen = None
    for size in sorted(comms):  # the last entry <= comm_size; the first when all are larger
        if chosen is None or size <= comm_size:
            chosen = size
        if size > comm_size:
            break
    msgs = comms[chosen]
    if not msgs:
        return None
    best = msgs[0]
    for m in msgs:
        if m.msg_size <= msg_size:
            best = m
        else:
            break
    return best
