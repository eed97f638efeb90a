"""The history store: one Parquet file per run and source under `DIR/v1/measurements/`, run metadata under
`DIR/v1/runs/`, the states computed after each run under `DIR/v1/states/`; read through DuckDB (embedded).

Plain Parquet with a stable, versioned schema (docs/health.md), so Spark or Trino can read the same files
when a fleet outgrows one machine. Files are written atomically (temporary file, rename): a reader never sees
half a run, and a run that fails part-way keeps what it appended.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fabricbench.errors import UsageError

SCHEMA_VERSION = 1
LAYOUT = f"v{SCHEMA_VERSION}"
DEFAULT_DIR = "results/history"

MEASUREMENT_SCHEMA = pa.schema([
    ("schema_version", pa.int16()),
    ("run_id", pa.string()),
    ("run_ts", pa.timestamp("us", tz="UTC")),
    ("source", pa.string()),  # check | sweep
    ("component_kind", pa.string()),  # node | gpu | nvlink | pcie | port | nic | pair | uplink
    ("component", pa.string()),  # 'lab3/nic', 'lab3->lab4', 'leaf2/uplink', 'lab3/gpu0/nvlink3'
    ("node", pa.string()),  # the node it belongs to (null for an uplink)
    ("partner", pa.string()),  # the other node of a pair (null otherwise)
    ("metric", pa.string()),  # bw_bytes_per_second | check_pass | ...
    ("value", pa.float64()),
    ("unit", pa.string()),  # bytes_per_second | ratio | count | lanes ...
    ("status", pa.string()),  # pass | warn | fail | unknown (checks), ok | failed (measurements)
    ("detail", pa.string()),
])

STATE_SCHEMA = pa.schema([
    ("schema_version", pa.int16()),
    ("run_id", pa.string()),
    ("run_ts", pa.timestamp("us", tz="UTC")),
    ("component_kind", pa.string()),
    ("component", pa.string()),
    ("node", pa.string()),
    ("metric", pa.string()),
    ("state", pa.string()),  # new | ok | suspect | regressed | flapping | recovered | failed
    ("value", pa.float64()),
    ("baseline", pa.float64()),
    ("noise", pa.float64()),  # relative robust spread of the baseline window
    ("drop", pa.float64()),  # 1 - value/baseline
    ("first_seen_run", pa.string()),
    ("first_seen_ts", pa.timestamp("us", tz="UTC")),
    ("last_good_run", pa.string()),
    ("last_good_ts", pa.timestamp("us", tz="UTC")),
    ("low_runs", pa.int32()),  # low readings among the last `window` runs
    ("evidence", pa.string()),  # the readings behind the state: 'run: value' pairs, newest last
])


def root(directory: str | os.PathLike) -> Path:
    return Path(directory) / LAYOUT


def _atomic_parquet(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _table(rows: list[dict] | pa.Table, schema: pa.Schema) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows.select(schema.names).cast(schema)
    cols = {name: [r.get(name) for r in rows] for name in schema.names}
    return pa.table(cols, schema=schema)


def append_measurements(directory, run_id: str, source: str, rows: list[dict] | pa.Table) -> Path | None:
    table = _table(rows, MEASUREMENT_SCHEMA)
    if table.num_rows == 0:
        return None
    return _atomic_parquet(table, root(directory) / "measurements" / f"{run_id}-{source}.parquet")


def write_states(directory, run_id: str, rows: list[dict] | pa.Table) -> Path:
    return _atomic_parquet(_table(rows, STATE_SCHEMA), root(directory) / "states" / f"{run_id}.parquet")


def write_run(directory, run_id: str, meta: dict) -> Path:
    from fabricbench.results import atomic_write_json

    return atomic_write_json(root(directory) / "runs" / f"{run_id}.json", {"schema_version": SCHEMA_VERSION, **meta})


def runs(directory) -> list[dict]:
    out = []
    for path in sorted((root(directory) / "runs").glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: r.get("run_ts", ""))


def new_run_id(ts: datetime | None = None) -> str:
    ts = ts or datetime.now(timezone.utc)
    return ts.strftime("%Y%m%dT%H%M%S%fZ")


def connect(directory, memory_limit: str | None = None):
    """A DuckDB connection with views `measurements` and `states` over the store (empty views when absent)."""
    import duckdb

    con = duckdb.connect()
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    base = root(directory)
    for view, schema, sub in (("measurements", MEASUREMENT_SCHEMA, "measurements"), ("states", STATE_SCHEMA, "states")):
        files = base / sub
        if files.is_dir() and any(files.glob("*.parquet")):
            glob = str(files / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{glob}')")
        else:
            con.register(f"_{view}_empty", schema.empty_table())
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM _{view}_empty")
    return con


def query(directory, sql: str):
    """Run `sql` over the store; returns a pyarrow table. Bad SQL is a usage error (one line)."""
    import duckdb

    con = connect(directory)
    try:
        rel = con.sql(sql)
        if rel is None:  # a statement without a result (SET, CREATE VIEW)
            import pyarrow as pa

            return pa.table({})
        return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    except duckdb.Error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"query failed: {first} (views: measurements, states; see docs/health.md)") from None
