"""NCCL's example tuner plugin config (plugins/tuner/example in NCCL; read by our plugin in nccl_tuner/ too).

One CSV line per rule: collective_type,min_bytes,max_bytes,algorithm,protocol,channels,nNodes,nRanks,
numPipeOps,regBuff. 8 fields are required (numPipeOps and regBuff optional); `-1` in channels keeps NCCL's
choice, in nNodes/nRanks/numPipeOps/regBuff matches anything; sizes are inclusive; lines starting with `#`
and empty lines are skipped; the first line that matches a call wins. A match sets that algorithm/protocol's
cost to 0 (so NCCL picks it unless NCCL ruled it out) and, when channels is not -1, the channel count.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabricbench.errors import UsageError
from fabricbench.tune.knobs import NCCL_ALGOS, NCCL_COLL, NCCL_PROTOS

FIELDS = ("collective_type", "min_bytes", "max_bytes", "algorithm", "protocol", "channels", "nNodes", "nRanks",
          "numPipeOps", "regBuff")
MAX_BYTES = 2**64 - 1  # size_t's largest value: "to the end" (the plugin parses sizes with strtoull)
COLL_NAMES = {name for name, _ in NCCL_COLL.values()}


@dataclass(frozen=True)
class TunerRule:
    collective: str  # plugin spelling: allreduce, allgather, reducescatter, broadcast, reduce
    min_bytes: int
    max_bytes: int
    algorithm: str
    protocol: str
    channels: int = -1
    nnodes: int = -1
    nranks: int = -1
    num_pipe_ops: int = -1
    reg_buff: int = -1
    comment: str = ""

    def __post_init__(self):
        if self.collective not in COLL_NAMES:
            raise UsageError(f"tuner rule: unknown collective '{self.collective}'; use {', '.join(sorted(COLL_NAMES))}")
        if self.algorithm not in NCCL_ALGOS or self.protocol not in NCCL_PROTOS:
            raise UsageError(f"tuner rule: unknown algorithm/protocol '{self.algorithm}/{self.protocol}'")
        if not 0 <= self.min_bytes <= self.max_bytes <= MAX_BYTES:
            raise UsageError(f"tuner rule: bad size range {self.min_bytes}-{self.max_bytes}")

    def line(self) -> str:
        return ",".join(str(v) for v in (self.collective, self.min_bytes, self.max_bytes, self.algorithm,
                                          self.protocol, self.channels, self.nnodes, self.nranks,
                                          self.num_pipe_ops, self.reg_buff))

    def matches(self, collective: str, nbytes: int, nnodes: int, nranks: int, num_pipe_ops: int = 1,
                reg_buff: int = 0) -> bool:
        return (self.collective == collective and self.min_bytes <= nbytes <= self.max_bytes
                and self.nnodes in (-1, nnodes) and self.nranks in (-1, nranks)
                and self.num_pipe_ops in (-1, num_pipe_ops) and self.reg_buff in (-1, reg_buff))


def render(rules: list[TunerRule], header: list[str] | None = None) -> str:
    lines = [f"# {h}" for h in (header or [])]
    lines.append("# " + ",".join(FIELDS))
    for rule in rules:
        if rule.comment:
            lines.append(f"# {rule.comment}")
        lines.append(rule.line())
    return "\n".join(lines) + "\n"


def parse(text: str) -> list[TunerRule]:
    """The rules as NCCL's example plugin reads them (8 to 10 fields; other lines are skipped as it does)."""
    rules = []
    for raw in text.splitlines():
        if not raw or raw.startswith("#"):
            continue
        fields = [f.strip(" \t") for f in raw.split(",") if f != ""]
        if not 8 <= len(fields) <= 10:
            continue
        fields += ["-1"] * (10 - len(fields))
        coll, lo, hi, algo, proto, *ints = fields
        rules.append(TunerRule(coll, int(lo), int(hi), algo, proto, *(int(x) for x in ints)))
    return rules


def first_match(rules: list[TunerRule], collective: str, nbytes: int, nnodes: int, nranks: int,
                num_pipe_ops: int = 1, reg_buff: int = 0) -> TunerRule | None:
    for rule in rules:
        if rule.matches(collective, nbytes, nnodes, nranks, num_pipe_ops, reg_buff):
            return rule
    return None
