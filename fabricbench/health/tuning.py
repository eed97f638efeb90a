"""`fabricbench health run --verify-tuning DIR`: after the sweep, within what is left of the budget, check that
the gains a `fabricbench tune` directory claims still hold (`tune verify`: default and tuned interleaved, a 95%
interval of the speed-up per claimed size). The outcome goes into the history (source 'tuning'), the .prom file
and the run's report; a gain that is gone makes the run exit 4 (unless the fabric itself exits 1).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

GONE_EXIT = 4  # docs/health.md: the fabric is not failing, but a tuning's claimed gain no longer holds


def estimate_s(directory: Path, pairs: int) -> float:
    """Seconds a verification takes: 2 x pairs runs at the tuning's own seconds per run."""
    try:
        summary = json.loads((Path(directory) / "tuning.json").read_text())
        per = [o["elapsed_s"] / o["runs"] for o in summary.get("ops", []) if o.get("runs")]
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        per = []
    return 2 * pairs * (max(per) if per else 10.0)


def _default_verify(directory, pairs, echo):
    from fabricbench.tune.verify import verify

    return verify(Path(directory), pairs, echo)


def verify_tunings(dirs: list[str], budget_left_s: float, pairs: int, echo, verify_fn=None) -> list[dict]:
    """One outcome per directory: status held | gone | nothing-claimed | skipped (budget) | error."""
    verify_fn = verify_fn or _default_verify
    outcomes = []
    t_all = time.monotonic()
    for d in dirs:
        left = budget_left_s - (time.monotonic() - t_all)
        est = estimate_s(Path(d), pairs)
        out = {"tuning": str(Path(d).absolute()), "pairs": pairs, "estimate_s": est, "checks": [], "why": ""}
        if est > left:
            out.update(status="skipped", why=f"needs about {est:.0f} s, {max(left, 0):.0f} s of the budget left",
                       seconds=0.0)
            outcomes.append(out)
            echo(f"verify-tuning {d}: skipped ({out['why']})")
            continue
        t0 = time.monotonic()
        try:
            checks = verify_fn(d, pairs, lambda line: echo("  " + line))
        except Exception as err:  # a failed default, a bad directory: recorded, the health run goes on
            out.update(status="error", why=f"{type(err).__name__}: {err}", seconds=time.monotonic() - t0)
            outcomes.append(out)
            echo(f"verify-tuning {d}: could not verify ({out['why']})")
            continue
        out["seconds"] = time.monotonic() - t0
        for c in checks:
            out["checks"].append({"op": c.op, "size_bytes": int(c.size_bytes), "claimed": c.claimed,
                                  "speedup": _num(c.ci.speedup), "ci_low": _num(c.ci.low),
                                  "ci_high": _num(c.ci.high), "pairs": c.ci.pairs, "holds": bool(c.holds),
                                  "verdict": c.ci.verdict})
        gone = [c for c in out["checks"] if not c["holds"]]
        out["status"] = "nothing-claimed" if not checks else ("gone" if gone else "held")
        for c in out["checks"]:
            claimed = f"{c['claimed']:.3f}x" if c["claimed"] else "?"
            echo(f"verify-tuning {c['op']} {c['size_bytes']} B: claimed {claimed}, now {_fmt(c)}: "
                 + ("holds" if c["holds"] else f"GONE ({c['verdict']})"))
        echo(f"verify-tuning {d}: " + {"held": f"all {len(checks)} claimed gain(s) hold",
                                       "gone": f"{len(gone)} of {len(checks)} claimed gain(s) gone; re-run 'fabricbench tune'",
                                       "nothing-claimed": "the tuning claims no gain"}[out["status"]])
        outcomes.append(out)
    return outcomes


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _fmt(c: dict) -> str:
    if c["speedup"] is None:
        return "no measurement"
    return f"{c['speedup']:.3f}x (95% CI {c['ci_low']:.3f}-{c['ci_high']:.3f}, {c['pairs']} pairs)"


def history_rows(outcomes: list[dict], run_id: str, ts) -> list[dict]:
    """Measurement rows (source 'tuning'): per claimed size its speed-up and interval bounds; per directory
    one 'gain_holds' row (1 held, 0 gone; null when it could not be verified)."""
    import pandas as pd

    base = {"schema_version": 1, "run_id": run_id, "run_ts": pd.Timestamp(ts), "source": "tuning",
            "component_kind": "tuning", "node": None, "partner": None}
    rows = []
    for o in outcomes:
        name = Path(o["tuning"]).name
        holds = {"held": 1.0, "gone": 0.0}.get(o["status"])
        rows.append({**base, "component": f"tuning:{name}", "metric": "gain_holds", "value": holds, "unit": "bool",
                     "status": o["status"], "detail": o["why"] or o["tuning"]})
        for c in o["checks"]:
            comp = f"tuning:{name}/{c['op']}/{c['size_bytes']}"
            detail = f"claimed {c['claimed']}; now {_fmt(c)}; {'holds' if c['holds'] else 'gone'}"
            for metric, value in (("speedup_ratio", c["speedup"]), ("speedup_ci_low", c["ci_low"]),
                                  ("speedup_ci_high", c["ci_high"])):
                rows.append({**base, "component": comp, "metric": metric, "value": value, "unit": "ratio",
                             "status": "ok" if c["holds"] else "gone", "detail": detail})
    return rows


def exit_code(fabric_code: int, outcomes: list[dict]) -> int:
    """The fabric's own code wins when it says a confirmed problem (1); otherwise a gone gain is 4; a tuning
    that could not be verified (error, skipped) makes a healthy run inconclusive (3)."""
    if fabric_code == 1:
        return 1
    if any(o["status"] == "gone" for o in outcomes):
        return GONE_EXIT
    if fabric_code == 0 and any(o["status"] in ("error", "skipped") for o in outcomes):
        return 3
    return fabric_code
