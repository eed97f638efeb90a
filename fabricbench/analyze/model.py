"""The normalized measurements every importer produces, whatever the input format.

Frames (pandas, one row per measurement):

- `pairs`: directed node-to-node bandwidth: `src`, `dst` (the sender and the receiver), `size`, `bw` (GB/s),
  `latency_us`, `round`, `rail` (-1 when not per rail), `nic`, `status` (ok | failed), `error`, `source`,
  `phase` (which half of a pair's turn: 0 = a->b, 1 = b->a, -1 unknown; pairs of a round run each phase at
  the same time, so phase + round + size says which flows shared the fabric), `stage` (0 = the sweep, 1 = a
  retest of what the sweep found, -1 unknown: a retest confirms or clears a suspect on its own rounds).
- `gpus`: GPU-to-GPU bandwidth: `src_host`, `src_gpu`, `dst_host`, `dst_gpu`, `test`, `bw`, `status`, `source`.
- `nics`: one NIC's bandwidth: `host`, `nic`, `peer`, `size`, `bw`, `status`, `error`, `source`.
- `groups`: a collective over a set of hosts: `op`, `hosts` (comma-joined, sorted), `nranks`, `size`, `busbw`,
  `nwrong`, `status`, `source`.

`caveats` are sentences the report prints; `expected_hosts` are hosts a run said it had (run.json), so that a
host with no measurement is reported, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PAIR_COLUMNS = {"src": "object", "dst": "object", "size": "int64", "bw": "float64", "latency_us": "float64",
                "round": "int64", "rail": "int64", "nic": "object", "status": "object", "error": "object",
                "source": "object", "phase": "int64", "stage": "int64"}
GPU_COLUMNS = {"src_host": "object", "src_gpu": "int64", "dst_host": "object", "dst_gpu": "int64",
               "test": "object", "bw": "float64", "status": "object", "source": "object"}
NIC_COLUMNS = {"host": "object", "nic": "object", "peer": "object", "size": "int64", "bw": "float64",
               "status": "object", "error": "object", "source": "object"}
GROUP_COLUMNS = {"op": "object", "hosts": "object", "nranks": "int64", "size": "int64", "busbw": "float64",
                 "nwrong": "float64", "status": "object", "source": "object"}


def frame(columns: dict[str, str], data: dict | list | None = None) -> pd.DataFrame:
    """A frame with exactly `columns` in order and dtype (missing columns filled with nulls)."""
    df = pd.DataFrame(data if data is not None else {})
    out = {}
    n = len(df)
    for name, dtype in columns.items():
        if name in df.columns:
            col = df[name]
        else:
            col = pd.Series([None] * n, index=df.index)
        if dtype == "int64":
            col = pd.to_numeric(col, errors="coerce").fillna(-1).astype("int64")
        elif dtype == "float64":
            col = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            col = col.astype("object")
        out[name] = col.to_numpy() if dtype != "object" else col.to_numpy(dtype=object)
    return pd.DataFrame(out, columns=list(columns))


@dataclass
class Dataset:
    pairs: pd.DataFrame = field(default_factory=lambda: frame(PAIR_COLUMNS))
    gpus: pd.DataFrame = field(default_factory=lambda: frame(GPU_COLUMNS))
    nics: pd.DataFrame = field(default_factory=lambda: frame(NIC_COLUMNS))
    groups: pd.DataFrame = field(default_factory=lambda: frame(GROUP_COLUMNS))
    caveats: list[str] = field(default_factory=list)
    expected_hosts: set[str] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)
    identifiers: dict[str, dict] = field(default_factory=dict)  # host -> {"gpus": {idx: {...}}, "nics": {...}}
    leaf_of: dict[str, str] = field(default_factory=dict)  # host -> leaf, when the results recorded it
    launchers: set[str] = field(default_factory=set)  # machines that launched/timed a run but are not nodes
    # inputs for other evidence sources: "link_state" (fabricbench.linkstate.Port list), "nccl_logs"
    # (fabricbench.engine.nccl_log records), "op_inference", "topology_opt_out" (--topology none)
    extra: dict = field(default_factory=dict)

    def empty(self) -> bool:
        return not (len(self.pairs) or len(self.gpus) or len(self.nics) or len(self.groups)
                    or self.extra.get("link_state") or self.extra.get("nccl_logs"))

    def counts(self) -> dict[str, int]:
        return {"pairs": len(self.pairs), "gpus": len(self.gpus), "nics": len(self.nics), "groups": len(self.groups)}

    def hosts(self) -> set[str]:
        seen: set[str] = set()
        if len(self.pairs):
            seen |= set(pd.unique(self.pairs["src"])) | set(pd.unique(self.pairs["dst"]))
        if len(self.gpus):
            seen |= set(pd.unique(self.gpus["src_host"]))
        if len(self.nics):
            seen |= set(pd.unique(self.nics["host"]))
        if len(self.groups):
            for hosts in pd.unique(self.groups["hosts"]):
                seen |= {h for h in str(hosts).split(",") if h}
        return {h for h in seen if isinstance(h, str) and h}


def merge(datasets: list[Dataset]) -> Dataset:
    """One dataset from several inputs (mixed runs); duplicates are kept and reported by the analysis."""
    out = Dataset()
    if not datasets:
        return out

    def cat(name: str, cols: dict) -> pd.DataFrame:
        parts = [getattr(d, name) for d in datasets if len(getattr(d, name))]
        if not parts:
            return frame(cols)
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)

    out.pairs = cat("pairs", PAIR_COLUMNS)
    out.gpus = cat("gpus", GPU_COLUMNS)
    out.nics = cat("nics", NIC_COLUMNS)
    out.groups = cat("groups", GROUP_COLUMNS)
    for d in datasets:
        out.caveats.extend(d.caveats)
        out.expected_hosts |= d.expected_hosts
        out.leaf_of.update(d.leaf_of)
        out.launchers |= d.launchers
        for key, value in d.extra.items():
            out.extra.setdefault(key, [])
            out.extra[key] += value if isinstance(value, list) else [value]
        out.sources.extend(d.sources)
        for host, ident in d.identifiers.items():
            out.identifiers.setdefault(host, {}).update(ident)
    return out


def finite(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]
