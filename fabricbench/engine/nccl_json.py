"""Write runs in nccl-tests' JSON layout (`-J FILE`, nccl-tests >= 2.17), so tools that read it read ours.

Layout (shared REFERENCE.md): top level `version, start_time, args, env, nccl_version, config{..., devices[]},
results[{size, count, type, redop, root, out_of_place{time, alg_bw, bus_bw, nwrong}, in_place{...}}],
out_of_bounds, average_bus_bandwidth{bandwidth, okay}, errors, end_time`; per-iteration statistics go in
`*_per_iter` as nccl-tests does with -I. nccl-tests writes one file per collective binary: with several ops,
FILE.json becomes FILE-<op>.json for each.
"""

from __future__ import annotations

from pathlib import Path

from fabricbench.results.io import atomic_write_json


def _entry(row: dict) -> dict:
    return {"time": row["time_us"], "alg_bw": row["algbw_gbps"], "bus_bw": row["busbw_gbps"],
            "nwrong": int(row["nwrong"])}


def _per_iter(row: dict) -> dict | None:
    if row.get("p50_us") is None:
        return None
    return {"min": row.get("min_us"), "max": row.get("max_us"), "avg": row["time_us"], "p50": row.get("p50_us"),
            "p99": row.get("p99_us"), "cv_pct": row.get("cv_pct")}


def document(op: str, rows: list[dict], record: dict) -> dict:
    results = []
    for row in rows:
        key = "in_place" if row["placement"] == "in-place" else "out_of_place"
        other = "out_of_place" if key == "in_place" else "in_place"
        item = {"size": int(row["size_bytes"]), "count": int(row["count"]), "type": row["dtype"],
                "redop": row["redop"], "root": int(row["root"]), key: _entry(row), other: None}
        stats = _per_iter(row)
        if stats:
            item[f"{key}_per_iter"] = stats
        results.append(item)
    wrong = sum(int(r["nwrong"]) for r in rows)
    avg = sum(r["busbw_gbps"] for r in rows) / len(rows) if rows else None
    cfg = record.get("config", {})
    versions = record.get("versions", {})
    return {
        "version": f"fabricbench {versions.get('fabricbench', '')}".strip(),
        "start_time": record.get("start_time"),
        "args": " ".join(record.get("command_line", [])),
        "env": record.get("env") or {},
        "nccl_version": versions.get("nccl"),
        "config": {
            "collective": op, "nranks": record.get("nranks"), "backend": record.get("backend"),
            "minbytes": cfg.get("min_bytes"), "maxbytes": cfg.get("max_bytes"), "iters": cfg.get("iters"),
            "warmup_iters": cfg.get("warmup"), "check_iters": cfg.get("check_iters"),
            "average": cfg.get("time_reduce"), "timing": cfg.get("timing"),
            "devices": [{"rank": r["rank"], "group": 0, "pid": r["pid"], "hostname": r["host"],
                         "device": r["gpu"] if r["gpu"] is not None else "cpu"} for r in record.get("ranks", [])],
        },
        "results": results,
        "out_of_bounds": {"count": wrong, "okay": wrong == 0},
        "average_bus_bandwidth": {"bandwidth": avg, "okay": True},
        "errors": [] if wrong == 0 else [f"{wrong} wrong values"],
        "end_time": record.get("end_time"),
    }


def write_nccl_tests_json(path: str, rows: list[dict], record: dict) -> list[Path]:
    op_rows: dict[str, list[dict]] = {}
    for row in rows:
        if row["row_kind"] == "op":
            op_rows.setdefault(row["op"], []).append(row)
    target = Path(path)
    written = []
    for op, these in op_rows.items():
        out = target if len(op_rows) == 1 else target.with_name(f"{target.stem}-{op}{target.suffix or '.json'}")
        written.append(atomic_write_json(out, document(op, these, record)))
    return written
