"""NCCL_DEBUG=INFO output as an analyzer input (alone, or interleaved with nccl-tests rows in a job log).

The reading itself is fabricbench.engine.nccl_log (every NCCL format from 2.3's "Ring 00 : 35 -> 34 [send] via
NET/Socket/0" to 2.2x's "Channel 00/0 : 0[0] -> 1[1] via P2P/IPC"); this module only attaches its run-level
record to the dataset (`extra["nccl_logs"]`) for the nccl-logs evidence source."""

from __future__ import annotations

import re

from fabricbench.analyze.model import Dataset

MARK = re.compile(r"\bNCCL (?:INFO|WARN)\b")
# "NVLS multicast support is not available on dev 0", "NVLS ... failed", "Failed to ... NVLS": NVLS did not start
NVLS_DOWN = re.compile(r"NCCL (?:INFO|WARN).*(?:NVLS[^\n]*(?:not available|fail|disabl|error)|(?:fail|error)[^\n]*NVLS)",
                       re.I)


def has_nccl_log(text: str) -> bool:
    return len(MARK.findall(text[: 1 << 20])) >= 3


def read_log(text: str, source: str) -> dict:
    from fabricbench.engine import nccl_log

    per_rank = nccl_log.summarize_by_rank(text)
    hosts = sorted({s["host"] for s in per_rank if s.get("host")})
    record = nccl_log.combine(per_rank, nnodes=len(hosts) or None)
    record["source"] = source
    record["hosts"] = hosts
    record["note"] = nccl_log.note_line(record)
    m = NVLS_DOWN.search(text)
    if m:
        end = text.find("\n", m.end())
        line = text[m.start():end if end >= 0 else len(text)]
        record["nvls_failed"] = re.sub(r"^NCCL (?:INFO|WARN)\s*", "", line)[:200]
    else:
        record["nvls_failed"] = None
    return record


def attach(ds: Dataset, text: str, source: str) -> Dataset:
    ds.extra.setdefault("nccl_logs", []).append(read_log(text, source))
    return ds


def parse_log_only(text: str, source: str) -> Dataset:
    ds = Dataset(sources=[source])
    return attach(ds, text, source)
