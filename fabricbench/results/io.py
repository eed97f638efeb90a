"""Atomic file writes and the results directory layout (results.parquet, run.json, ranks/)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from fabricbench.errors import UsageError
from fabricbench.results.schema import SCHEMA_VERSION, to_frame

RESULTS_FILE = "results.parquet"
RUN_FILE = "run.json"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file beside `path`, fsync, rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_results(out_dir: str | os.PathLike, records: Iterable[Mapping[str, object]] | pd.DataFrame,
                  run_info: Mapping[str, object] | None = None) -> Path:
    """Write `results.parquet` (and `run.json` when given) into `out_dir`, atomically. Returns the parquet path."""
    out = Path(out_dir)
    frame = records if isinstance(records, pd.DataFrame) else to_frame(records)
    buffer = frame.to_parquet(index=False, engine="pyarrow")
    parquet = atomic_write_bytes(out / RESULTS_FILE, buffer)
    if run_info is not None:
        info = {"schema_version": SCHEMA_VERSION, **run_info}
        atomic_write_json(out / RUN_FILE, info)
    return parquet


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results directory (or a results.parquet file) into a DataFrame with the full schema."""
    path = Path(path)
    parquet = path / RESULTS_FILE if path.is_dir() else path
    if not parquet.exists():
        raise UsageError(f"{parquet}: no results file here (expected a fabricbench results directory or {RESULTS_FILE})")
    try:
        frame = pd.read_parquet(parquet, engine="pyarrow")
    except Exception as err:  # pyarrow raises several types for damaged files
        raise UsageError(f"{parquet}: not a readable Parquet file ({type(err).__name__}: {err}); re-run or restore it")
    return to_frame(frame)
