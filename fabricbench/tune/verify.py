"""`fabricbench tune verify DIR`: do the gains written in DIR still hold? (After an NCCL/MPI upgrade or a fabric
change they may not.) Default and tuned (DIR applied, exactly as `run --tuning DIR` does) run interleaved; each
size the tuning claimed faster must still show a speed-up interval above 1."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fabricbench.errors import UsageError
from fabricbench.tune.outputs import JSON_FILE, tuning_env
from fabricbench.tune.runner import RunSpec, run_with_retry
from fabricbench.tune.search import Candidate
from fabricbench.tune.stats import RatioCI, ratio_ci


@dataclass
class Check:
    op: str
    size_bytes: int
    claimed: float | None
    ci: RatioCI

    @property
    def holds(self) -> bool:
        return self.ci.significant_gain


def load(directory: Path) -> dict:
    path = Path(directory) / JSON_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{directory}: not a tuning directory (no {JSON_FILE}); run 'fabricbench tune' first") from None
    except ValueError as err:
        raise UsageError(f"{path}: not valid JSON ({err}); re-run 'fabricbench tune'") from None


def verify(directory: Path, pairs: int, echo, spec_override: dict | None = None) -> list[Check]:
    summary = load(directory)
    spec_fields = dict(summary["spec"], **(spec_override or {}))
    spec = RunSpec(**spec_fields)
    env = tuning_env(Path(directory))
    claims = [d for d in summary["decisions"] if d["kept"] and d["effective"] != "default"]
    if not claims:
        echo(f"{directory}: the tuning claims no gain (it keeps the defaults); nothing to verify")
        return []
    default = Candidate("default", (), "default", (), True)
    tuned = Candidate("tuned", tuple(sorted(env.items())), "tuned")
    runs = Path(directory) / "verify-runs"
    samples = {"default": [], "tuned": []}
    for k in range(pairs):
        order = (default, tuned) if k % 2 == 0 else (tuned, default)
        for cand in order:
            s = run_with_retry(spec, cand, runs / f"{k:02d}-{cand.name}", k, "verify")
            echo(f"  verify pair {k + 1}/{pairs} {cand.name:8s} {s.wall_s:5.1f} s {'ok' if s.ok else s.status + ': ' + s.reason}")
            if not s.ok:
                raise_from = "the tuned configuration" if cand is tuned else "the defaults"
                raise VerifyFailed(f"{raise_from} failed during verification ({s.status}: {s.reason})")
            samples[cand.name].append(s)
    checks = []
    for d in claims:
        size = int(d["size_bytes"])
        dflt = [s.times_us.get(size, math.nan) for s in samples["default"]]
        tund = [s.times_us.get(size, math.nan) for s in samples["tuned"]]
        checks.append(Check(d["op"], size, d.get("speedup"), ratio_ci(np.array(dflt), np.array(tund))))
    return checks


class VerifyFailed(RuntimeError):
    pass
