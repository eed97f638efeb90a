"""The run configuration: validated once in the CLI, then handed to every rank as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

ENV = "FABRICBENCH_CONFIG"  # JSON text of a RunConfig, set by the local launcher for its ranks


@dataclass
class RunConfig:
    ops: list[str]
    backend: str = "auto"
    min_bytes: int = 32 << 20
    max_bytes: int = 32 << 20
    step_factor: int | None = None
    step_bytes: int | None = None
    iters: int = 20
    warmup: int = 5
    dtype: str = "float"
    redop: str = "sum"
    root: int = 0
    check_iters: int = 1
    timing: str = "aggregate"  # aggregate | per-iter
    time_reduce: str = "avg"  # avg | max | min | rank0
    in_place: bool = False
    cuda_graph: bool = False  # nccl-tests -G: capture the timed loop once, replay it (graph_launches times)
    graph_launches: int = 0  # nccl-tests -G N: replays of the captured timed loop (0: no graph)
    agg_iters: int = 1  # nccl-tests -m: operations per timed iteration, issued back to back
    blocking: int = 0  # nccl-tests -z: 1 wait+barrier after each op, 2 wait, 3 wait+untimed barrier per iteration
    cycles: int = 1  # nccl-tests -N: passes over the sizes (0: until interrupted)
    all_dtypes: bool = False  # -d all
    all_redops: bool = False  # -o all
    window: int = 64  # p2p_uni/p2p_bi: messages in flight per call (OSU's window size)
    min_bw: float | None = None  # NCCL_TESTS_MIN_BW: fail when the average busbw < 0.9 x this (GB/s)
    cpu_bind: str = "auto"  # auto: GPU ranks bound to their GPU's NUMA-local CPUs | none
    split: str | None = None  # nccl-tests' NCCL_TESTS_SPLIT syntax, e.g. 'MOD 8'
    out_dir: str | None = None  # None: results/<run-id>
    json_path: str | None = None
    timeout_s: float = 600.0  # no-progress limit: no rank returned from a call for this long (0: none)
    run_id: str | None = None
    command_line: list[str] = field(default_factory=list)
    quiet: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls(**json.loads(text))

    @classmethod
    def from_env(cls) -> RunConfig | None:
        text = os.environ.get(ENV)
        return cls.from_json(text) if text else None
