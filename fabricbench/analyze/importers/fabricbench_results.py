"""fabricbench results (results.parquet + run.json): pair, gpu_pair, nic and op rows.

Only the columns the analysis needs are read (pyarrow, node names dictionary-encoded), so that a sweep of
millions of rows loads in a second or two. Direction a->b means node_a sent; b->a means node_b sent; `bidir`
rows count for both directions (with a caveat); `pingpong` rows carry latency only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fabricbench.analyze.model import (GPU_COLUMNS, GROUP_COLUMNS, NIC_COLUMNS, PAIR_COLUMNS, Dataset, frame)
from fabricbench.errors import UsageError

WANTED = ["run_id", "row_kind", "op", "size_bytes", "algbw_gbps", "busbw_gbps", "latency_us", "status", "error",
          "round", "node_a", "node_b", "direction", "host", "src_gpu", "dst_gpu", "kind", "nic", "peer", "gbps",
          "nranks", "nnodes", "nwrong", "rail", "repeat", "group", "gpu", "rank", "phase"]


def _read_run_json(folder: Path, ds: Dataset) -> dict:
    run_file = folder / "run.json"
    if not run_file.exists():
        ds.caveats.append(f"{folder}: no run.json beside results.parquet; hosts that never reported cannot be "
                          "told apart from hosts that were not in the run")
        return {}
    try:
        from fabricbench import limits

        info = limits.load_json(run_file, "run.json")
        if not isinstance(info, dict):
            raise ValueError("not an object")
    except (ValueError, OSError, UsageError) as err:
        ds.caveats.append(f"{run_file}: unreadable ({err}); provenance ignored")
        return {}
    from fabricbench.results.io import check_consistent

    stale = check_consistent(folder)
    if stale:
        ds.caveats.append(f"{folder}: {stale}")
    hosts = info.get("hosts") or []
    nodes = info.get("nodes")
    if info.get("kind") == "pairwise-sweep" and isinstance(nodes, list) and nodes:
        # a sweep's nodes are its plan's nodes; `hosts` are the machines that timed rows (with --local, the one
        # launching machine, which is not a node and has no measurement of its own)
        ds.expected_hosts |= {str(h) for h in nodes if h}
        ds.launchers |= {str(h) for h in hosts if h and str(h) not in {str(x) for x in nodes}}
    elif isinstance(hosts, list):
        ds.expected_hosts |= {str(h) for h in hosts if h}
    fabric = info.get("fabric") if isinstance(info.get("fabric"), dict) else {}
    names = nodes if isinstance(nodes, list) and nodes else hosts
    if isinstance(fabric.get("leaves"), list) and isinstance(names, list) and len(fabric["leaves"]) == len(names):
        # sweeps record each node's leaf in the order of their node list
        ds.leaf_of.update({str(h): str(lf) for h, lf in zip(names, fabric["leaves"]) if h and lf})
        over = _recorded_oversubscription(fabric)
        if over is not None:
            ds.extra["uplink_oversubscription"] = [over]
    leaves = info.get("leaves") or (info.get("simulation") or {}).get("leaves")
    if isinstance(leaves, dict) and leaves:
        # host -> leaf ({host: leaf}) or leaf -> [hosts] ({leaf: [host, ...]}), as sweeps and the simulator record it
        for k, v in leaves.items():
            if isinstance(v, list):
                ds.leaf_of.update({str(h): str(k) for h in v})
            elif isinstance(v, str):
                ds.leaf_of[str(k)] = v
    for rank in info.get("ranks") or []:
        if isinstance(rank, dict) and rank.get("host"):
            ds.expected_hosts.add(str(rank["host"]))
    if info.get("status") in ("failed", "running"):
        why = info.get("error") or ("the run never finished" if info.get("status") == "running" else "unknown")
        ds.caveats.append(f"{folder}: run status {info.get('status')} ({' '.join(str(why).split())[:200]}); "
                          "what it measured is analyzed, missing measurements are reported")
    return info


def _recorded_oversubscription(fabric: dict) -> float | None:
    """A sweep's fabric map records each leaf's uplink capacity in pairs at full host rate (`uplink_pairs`):
    hosts swept on a leaf over that is its oversubscription as the contention model reads it (the median over
    leaves; None where a leaf has no limit recorded)."""
    limits_ = fabric.get("uplink_pairs")
    if not isinstance(limits_, dict) or not limits_:
        return None
    hosts: dict[str, int] = {}
    for lf in fabric["leaves"]:
        if lf:
            hosts[str(lf)] = hosts.get(str(lf), 0) + 1
    try:
        ratios = sorted(hosts[k] / float(limits_[k]) for k in hosts if float(limits_.get(k, 0)) > 0)
    except (TypeError, ValueError):
        return None
    if len(ratios) != len(hosts):
        return None
    return ratios[len(ratios) // 2]


PAIR_ONLY = ["row_kind", "node_a", "node_b", "direction", "size_bytes", "algbw_gbps", "latency_us", "status",
             "error", "round", "rail", "repeat", "nic", "phase"]


def _kinds(col) -> set:
    """Row kinds present in a (dictionary-encoded) column, without decoding every row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: set = set()
    for chunk in col.chunks:
        if pa.types.is_dictionary(chunk.type):
            used = pc.unique(chunk.indices).to_pylist()
            vals = chunk.dictionary.to_pylist()
            out |= {vals[i] for i in used if i is not None}
        else:
            out |= set(pc.unique(chunk).to_pylist())
    return {k for k in out if k is not None}


TEXT_COLUMNS = {"node_a", "node_b", "host", "run_id", "op", "direction", "status", "row_kind", "nic", "peer", "kind",
                "error"}


def _check_types(schema, cols: list[str], parquet: Path) -> None:
    """Text columns hold strings, the others numbers (or strings pandas can parse): never nested values."""
    import pyarrow as pa

    for name in cols:
        t = schema.field(name).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        text = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
        ok = text if name in TEXT_COLUMNS else (text or pa.types.is_integer(t) or pa.types.is_floating(t)
                                                 or pa.types.is_boolean(t))
        if not ok:
            raise UsageError(f"{parquet}: column {name} has type {t}, expected "
                             f"{'text' if name in TEXT_COLUMNS else 'numbers'}; not a fabricbench results file")


def _table(parquet: Path):
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(parquet)
        cols = [c for c in WANTED if c in schema.names]
        if "row_kind" in cols:
            kinds = pq.read_table(parquet, columns=["row_kind"], read_dictionary=["row_kind"]).column("row_kind")
            if _kinds(kinds) == {"pair"}:
                cols = [c for c in PAIR_ONLY if c in schema.names]  # latency etc. are not used: not read
                if "algbw_gbps" not in cols and "busbw_gbps" in schema.names:
                    cols.append("busbw_gbps")
            del kinds
        if "row_kind" not in cols:
            raise UsageError(f"{parquet}: no row_kind column; not a fabricbench results file")
        _check_types(schema, cols, parquet)
        dict_cols = [c for c in ("node_a", "node_b", "host", "run_id", "op", "direction", "status", "row_kind",
                                 "nic", "peer", "kind", "error", "phase") if c in cols]
        return pq.read_table(parquet, columns=cols, read_dictionary=dict_cols)
    except UsageError:
        raise
    except Exception as err:  # pyarrow raises several types for damaged files
        raise UsageError(f"{parquet}: not a readable Parquet file ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}); truncated or corrupt? re-run or restore it") from None


def _col(tbl, name, default=None):
    if name in tbl.column_names:
        return tbl.column(name).to_pandas()
    return pd.Series([default] * tbl.num_rows)


def _cat(tbl, name) -> pd.Categorical | None:
    if name not in tbl.column_names:
        return None
    col = tbl.column(name).to_pandas()
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype("category")
    return col.array


def _stage(tbl, n: int) -> np.ndarray:
    """The sweep's stage of each row from its `phase` column: 0 sweep, 1 retest (a retest's rounds confirm or
    clear what the sweep found), -1 not recorded. Compared in Arrow: no pandas copy of a column of millions."""
    if "phase" not in tbl.column_names:
        return np.full(n, -1, dtype=np.int8)
    import pyarrow as pa
    import pyarrow.compute as pc

    col = tbl.column("phase")
    text = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not (pa.types.is_string(text) or pa.types.is_large_string(text)):
        return np.full(n, -1, dtype=np.int8)  # not a sweep's stage names: stage unknown, as for other inputs
    codes = {"sweep": 0, "retest": 1}
    parts = []
    for chunk in col.chunks:
        if pa.types.is_dictionary(chunk.type):  # read as a dictionary: map its few values, then the indices
            lut = np.array([codes.get(v, -1) for v in chunk.dictionary.to_pylist()] + [-1], dtype=np.int8)
            idx = pc.fill_null(chunk.indices, len(lut) - 1).to_numpy(zero_copy_only=False)
            parts.append(lut[idx])
        else:
            part = np.full(len(chunk), -1, dtype=np.int8)
            for value, code in codes.items():
                part[pc.fill_null(pc.equal(chunk, value), False).to_numpy(zero_copy_only=False)] = code
            parts.append(part)
    return np.concatenate(parts) if parts else np.full(n, -1, dtype=np.int8)


def _is(cat: pd.Categorical | None, value: str, n: int) -> np.ndarray:
    if cat is None:
        return np.zeros(n, dtype=bool)
    try:
        code = cat.categories.get_loc(value)
    except KeyError:
        return np.zeros(n, dtype=bool)
    return np.asarray(cat.codes) == code


def _num(tbl, name, dtype, fill):
    if name not in tbl.column_names:
        return np.full(tbl.num_rows, fill, dtype=dtype)
    import pyarrow as pa

    arr = tbl.column(name)
    if arr.null_count == 0 and (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        return arr.to_numpy().astype(dtype, copy=False)
    col = pd.to_numeric(arr.to_pandas(), errors="coerce")
    if np.issubdtype(np.dtype(dtype), np.integer):
        return col.fillna(fill).to_numpy(dtype=dtype)
    return col.to_numpy(dtype=dtype, na_value=np.nan)


def _pairs(tbl, source: str, ds: Dataset) -> pd.DataFrame:
    n = tbl.num_rows
    direction = _cat(tbl, "direction")
    a = _cat(tbl, "node_a")
    b = _cat(tbl, "node_b")
    if a is None or b is None:
        raise UsageError(f"{source}: pair rows without node_a/node_b columns")
    cats = a.categories.union(b.categories)
    a_codes = (a if a.categories.equals(cats) else a.set_categories(cats)).codes.astype(np.int32)
    b_codes = (b if b.categories.equals(cats) else b.set_categories(cats)).codes.astype(np.int32)
    del a, b
    if (a_codes < 0).any() or (b_codes < 0).any():
        bad = int((a_codes < 0).sum() + (b_codes < 0).sum())
        ds.caveats.append(f"{source}: {bad} pair row(s) without node names were ignored")
    bw = _num(tbl, "algbw_gbps", np.float32, np.nan)
    if not np.isfinite(bw).all() and "busbw_gbps" in tbl.column_names:
        bus = _num(tbl, "busbw_gbps", np.float32, np.nan)
        bw = np.where(np.isfinite(bw), bw, bus)
        del bus
    rev = _is(direction, "b->a", n)
    bidir = _is(direction, "bidir", n)
    pingpong = _is(direction, "pingpong", n)
    phase = np.where(rev, 1, np.where(_is(direction, "a->b", n), 0, -1)).astype(np.int8)
    stage = _stage(tbl, n)
    src = np.where(rev, b_codes, a_codes)
    dst = np.where(rev, a_codes, b_codes)
    del rev
    size = _num(tbl, "size_bytes", np.int64, -1)
    lat = _num(tbl, "latency_us", np.float32, np.nan)
    rnd = _num(tbl, "round", np.int32, -1)
    if "repeat" in tbl.column_names:
        rnd = rnd + _num(tbl, "repeat", np.int32, 0) * 100_000
    rail = _num(tbl, "rail", np.int16, -1)
    status = _cat(tbl, "status")
    if status is None:
        status = pd.Categorical(["ok"]).repeat(n) if n else pd.Categorical([])
    elif status.isna().any():
        status = status.add_categories(["ok"]) if "ok" not in status.categories else status
        status = status.fillna("ok")
    if pingpong.any():
        bw = np.where(pingpong, np.float32(np.nan), bw)
    nic = _cat(tbl, "nic")
    err = _cat(tbl, "error")
    empty = pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8), categories=pd.Index([], dtype=object))
    nic = nic if nic is not None else empty
    err = err if err is not None else empty
    if bidir.any():
        ds.caveats.append(f"{source}: {int(bidir.sum())} bidirectional pair row(s) count for both directions "
                          "(a bidirectional test cannot say which direction is slow)")
        idx = np.flatnonzero(bidir)
        src = np.concatenate([src, b_codes[idx]])
        dst = np.concatenate([dst, a_codes[idx]])
        take = np.concatenate([np.arange(n), idx])
        bw, size, lat, rnd, rail = (x[take] for x in (bw, size, lat, rnd, rail))
        phase = np.concatenate([phase, np.full(len(idx), -1, np.int8)])
        stage = stage[take]
        status, nic, err = status.take(take), nic.take(take), err.take(take)
    del a_codes, b_codes
    keep = (src >= 0) & (dst >= 0)
    if not keep.all():
        src, dst, bw, size, lat, rnd, rail, phase, stage = (x[keep] for x in (src, dst, bw, size, lat, rnd, rail,
                                                                             phase, stage))
        status, nic, err = status[keep], nic[keep], err[keep]
    m = len(src)
    out = pd.DataFrame({
        "src": pd.Categorical.from_codes(src, categories=cats),
        "dst": pd.Categorical.from_codes(dst, categories=cats),
        "size": size, "bw": bw, "latency_us": lat, "round": rnd, "rail": rail,
        "nic": nic, "status": status, "error": err,
        "source": pd.Categorical.from_codes(np.zeros(m, dtype=np.int8), categories=[source]),
        "phase": phase, "stage": stage,
    }, copy=False)
    return out[list(PAIR_COLUMNS)]


def load_results(path: Path) -> Dataset:
    import pyarrow.compute as pc

    folder = path if path.is_dir() else path.parent
    parquet = path / "results.parquet" if path.is_dir() else path
    ds = Dataset(sources=[str(path)])
    info = _read_run_json(folder, ds) if path.is_dir() or (folder / "run.json").exists() else {}
    from fabricbench import limits

    limits.check_regular(parquet, "results", limits.MAX_PARQUET_BYTES)
    tbl = _table(parquet)
    if tbl.num_rows == 0:
        ds.caveats.append(f"{path}: results.parquet has no rows")
        return ds
    kinds = tbl.column("row_kind")
    source = str(path)

    present = _kinds(kinds)

    def rows(kind: str):
        if present == {kind}:
            return tbl
        if kind not in present:
            return tbl.slice(0, 0)
        return tbl.filter(pc.equal(kinds.cast("string"), kind))

    total = tbl.num_rows
    pair_tbl = rows("pair")
    n_pairs = pair_tbl.num_rows
    if n_pairs:
        ds.pairs = _pairs(pair_tbl, source, ds)
    del pair_tbl
    if present == {"pair"}:
        del tbl, kinds
        try:
            import pyarrow as pa

            pa.default_memory_pool().release_unused()
        except Exception:
            pass
        return ds
    gpu_tbl = rows("gpu_pair")
    if gpu_tbl.num_rows:
        g = gpu_tbl.to_pandas()
        host = g["host"].astype(object) if "host" in g else None
        ds.gpus = frame(GPU_COLUMNS, {
            "src_host": host, "dst_host": host, "src_gpu": g.get("src_gpu"), "dst_gpu": g.get("dst_gpu"),
            "test": g["kind"].astype(object) if "kind" in g else g.get("op"),
            "bw": g["gbps"] if "gbps" in g else g.get("algbw_gbps"),
            "status": g["status"].astype(object).fillna("ok") if "status" in g else "ok", "source": source})
        ds.gpus = ds.gpus[ds.gpus["test"].astype(str) != "latency"].reset_index(drop=True)
    nic_tbl = rows("nic")
    if nic_tbl.num_rows:
        g = nic_tbl.to_pandas()
        ds.nics = frame(NIC_COLUMNS, {
            "host": g.get("host"), "nic": g.get("nic"), "peer": g.get("peer"), "size": g.get("size_bytes"),
            "bw": g["gbps"] if "gbps" in g else g.get("algbw_gbps"),
            "status": g["status"].astype(object).fillna("ok") if "status" in g else "ok",
            "error": g.get("error"), "source": source})
    op_tbl = rows("op")
    if op_tbl.num_rows:
        g = op_tbl.to_pandas()
        hosts = ",".join(sorted({str(h) for h in (info.get("hosts") or []) if h}))
        ds.groups = frame(GROUP_COLUMNS, {
            "op": g.get("op"), "hosts": hosts, "nranks": g.get("nranks"), "size": g.get("size_bytes"),
            "busbw": g.get("busbw_gbps"), "nwrong": g.get("nwrong"),
            "status": g["status"].astype(object).fillna("ok") if "status" in g else "ok", "source": source})
    other = total - n_pairs - gpu_tbl.num_rows - nic_tbl.num_rows - op_tbl.num_rows
    if other:
        ds.caveats.append(f"{source}: {other} row(s) of kind rank (or unknown kinds) are not used for localization")
    return ds
