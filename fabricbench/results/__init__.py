"""Results: the stable on-disk format (results.parquet + run.json) shared by every command."""

from fabricbench.results.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_results,
    write_results,
)
from fabricbench.results.schema import COLUMNS, SCHEMA_VERSION, to_frame

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_results",
    "to_frame",
    "write_results",
]
