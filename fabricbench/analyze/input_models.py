"""Schemas (pydantic) for the analyzer's input files that are not measurements: criteria thresholds and tests,
and baselines (an earlier `analyze --format json`). Every number is finite and within a range that keeps the
analysis meaningful (a fleet_fraction of 0 or a baseline_drop of 1 would divide by zero or accept anything);
a refusal names the field, e.g. `--criteria c.yaml: thresholds.fleet_fraction: must be > 0 and < 1`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fabricbench.errors import UsageError

Finite = Annotated[float, Field(allow_inf_nan=False)]


def _fraction(lo_open: bool = True, hi_open: bool = True):
    return Field(default=None, allow_inf_nan=False, **({"gt": 0} if lo_open else {"ge": 0}),
                 **({"lt": 1} if hi_open else {"le": 1}))


class ThresholdValues(BaseModel):
    """The thresholds a criteria file may set (defaults in fabricbench.analyze.analysis.Thresholds)."""

    model_config = ConfigDict(extra="allow", strict=False)

    fleet_fraction: float | None = _fraction()
    baseline_drop: float | None = _fraction()
    expected_fraction: float | None = _fraction(hi_open=False)
    min_spread: float | None = _fraction(lo_open=False)
    pair_sigmas: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    component_sigmas: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    min_confidence: float | None = _fraction(lo_open=False, hi_open=False)
    nvlink_min: float | None = _fraction(lo_open=False)
    explain: float | None = _fraction(lo_open=False)
    latency_factor: float | None = Field(default=None, gt=1, le=1000, allow_inf_nan=False)


class TestValues(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=200)
    min_confidence: float | None = _fraction(lo_open=False, hi_open=False)
    min_gbps: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False)


class FleetRow(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    path_class: str = Field(alias="class", min_length=1, max_length=100)
    size: int = Field(ge=1, le=1 << 50)
    median_gbps: float = Field(gt=0, le=1e6, allow_inf_nan=False)


class NodeLevel(BaseModel):
    model_config = ConfigDict(extra="allow")

    send: Finite = Field(default=0.0, ge=-50, le=50)
    recv: Finite = Field(default=0.0, ge=-50, le=50)


class Baseline(BaseModel):
    model_config = ConfigDict(extra="allow")

    fleet: list[FleetRow] = Field(default_factory=list, max_length=1_000_000)
    node_levels: dict[str, NodeLevel] = Field(default_factory=dict)


def _message(err: ValidationError, where: str, prefix: str = "") -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    return f"{where}: {loc or 'document'}: {first['msg']}"


def check_thresholds(data: dict, where: str) -> dict:
    try:
        ThresholdValues.model_validate(data)
    except ValidationError as err:
        raise UsageError(_message(err, where, "thresholds")) from None
    return data


def check_test(data: dict, where: str, index: int) -> None:
    try:
        TestValues.model_validate(data)
    except ValidationError as err:
        raise UsageError(_message(err, where, f"tests[{index}]")) from None


def check_baseline(doc: dict, where: str) -> dict:
    """{'fleet': [...], 'nodes': {...}} from an `analyze --format json` document, every value checked."""
    try:
        base = Baseline.model_validate({"fleet": doc.get("fleet") or [], "node_levels": doc.get("node_levels") or {}})
    except ValidationError as err:
        raise UsageError(_message(err, where)) from None
    fleet = [row.model_dump(by_alias=True) for row in base.fleet]
    nodes = {host: lv.model_dump() for host, lv in base.node_levels.items()}
    return {"fleet": fleet, "nodes": nodes}
