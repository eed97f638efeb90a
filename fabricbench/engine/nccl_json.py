"""`--json FILE` / `-J FILE`: nccl-tests 2.19.6's JSON layout (src/util.cu, JSON_FILE_VERSION 3), so NVIDIA's
tools/analyze_perf_json.py and every script written for nccl-tests read our files.

What nccl-tests' writer emits, and so what we emit (key order, nesting and value types):
  {"version": 3 (int), "start_time": "%Y-%m-%d %H:%M:%S" (local time), "args": [argv strings],
   "env": ["NAME=value", ...], "nccl_version": NCCL's integer code (e.g. 22703 for 2.27.3),
   "config": {"nthreads", "ngpus" (int), "minimum_bytes", "maximum_bytes", "step_factor" | "step_bytes",
              "warmup_iters", "iterations", "aggregated_iterations", "validation", "graph" (int),
              "blocking_collectives", "per_iter_timing" ("true"/"false"), "per_iter_skip" (int),
              "parallel_init" ("true"/"false"),
              "devices": [{"rank", "group", "pid" (int), "hostname" (str), "device" (int), "device_hex",
                           "device_info" (str)}]},
   "results": [{"size", "count" (int), "type", "redop" (str), "root" (str, printf "%6i": "     0"),
                "out_of_place": {"time", "alg_bw", "bus_bw" (double), "nwrong" (double, null if unchecked)} | null,
                "out_of_place_per_iter": {"skipped_iterations" (int), "min_us", "max_us", "avg_us", "p50_us",
                    "p95_us", "p99_us", "stdev_us", "cv_pct" (double), "times_us" [double],
                    "per_process_max_times_us" [[double] per process] (only with more than one process)},
                "in_place": {...} | null, "in_place_per_iter": {...},
                "actual_iterations" (int), "experiment_name" (str)}],
   "out_of_bounds": {"count" (int), "okay": "true"/"false"},
   "average_bus_bandwidth": {"bandwidth" (double), "okay": "unchecked" | "true"/"false"},
   "errors": [str], "end_time": str}
Booleans are the strings "true"/"false"; a NaN double is the string "nan"; doubles are printed "%f".
Per-iteration objects appear with `--timing per-iter` (nccl-tests -I 1). A run without NCCL (gloo, MPI)
writes nccl_version 0. One addition: config.collective names the operation (nccl-tests has one binary per
collective; fabricbench runs several), used by `fabricbench analyze`.

Unlike nccl-tests, which streams the file and leaves it unterminated when it dies, we rewrite it atomically
after every size: a run that fails part-way leaves valid JSON with every completed size (without the footer
keys, which only a finished run has). As nccl-tests does (fopen "wx"), an existing file is never overwritten:
FILE.0, FILE.1, ... are tried instead. With several ops, each op gets its own file, FILE's stem + "-<op>"
(results.json -> results-all_reduce.json); the names are printed when the run starts.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

from fabricbench.results.io import atomic_write_bytes

JSON_FILE_VERSION = 3
_SECRET = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|_KEY$|^AWS_|PRIVATE", re.IGNORECASE)


def nccl_version_code(version: str | int | None) -> int:
    """'2.27.3' -> 22703 (NCCL_VERSION(X,Y,Z): X*10000+Y*100+Z from 2.9 on, X*1000+Y*100+Z before); none -> 0."""
    if isinstance(version, int):
        return version
    m = re.match(r"^\s*(\d+)\.(\d+)\.(\d+)", str(version or ""))
    if not m:
        return 0
    x, y, z = (int(g) for g in m.groups())
    return x * 10000 + y * 100 + z if (x, y) >= (2, 9) else x * 1000 + y * 100 + z


def json_bool(value: bool) -> str:
    return "true" if value else "false"


def root_field(root: int) -> str:
    return f"{int(root):6d}"


def environment_list(env=None) -> list[str]:
    """nccl-tests writes the whole environment; we leave out names that look like secrets and our own config."""
    env = os.environ if env is None else env
    return [f"{k}={v}" for k, v in env.items() if not _SECRET.search(k) and k != "FABRICBENCH_CONFIG"]


def _emit(value) -> str:
    """nccl-tests' writer: compact, doubles as %f, NaN as the string "nan", ints as %d."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # never emitted by nccl-tests as a JSON boolean
        return json.dumps(json_bool(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return '"nan"' if math.isnan(value) else ("%f" % value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_emit(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_emit(v) for v in value) + "]"
    return _emit(float(value))


def encode(document: dict) -> bytes:
    return (_emit(document) + "\n").encode()


def placement_entry(row: dict, checked: bool) -> dict:
    return {"time": float(row["time_us"]), "alg_bw": float(row["algbw_gbps"]), "bus_bw": float(row["busbw_gbps"]),
            "nwrong": float(row["nwrong"]) if checked and row.get("nwrong") is not None else None}


def per_iter_entry(times_us: list[float], per_process: list[list[float]] | None) -> dict:
    """nccl-tests' computeIterStats: nearest-rank percentiles ((n*p+99)/100-1), population stdev."""
    import numpy as np

    t = np.asarray(times_us, dtype=np.float64)
    s = np.sort(t)
    n = len(s)

    def pct(p: int) -> float:
        return float(s[min(n - 1, (n * p + 99) // 100 - 1)])

    avg = float(s.mean())
    stdev = float(math.sqrt(((s - avg) ** 2).sum() / n))
    entry = {"skipped_iterations": 0, "min_us": float(s[0]), "max_us": float(s[-1]), "avg_us": avg,
             "p50_us": float(s[n // 2]), "p95_us": pct(95), "p99_us": pct(99), "stdev_us": stdev,
             "cv_pct": stdev / avg * 100.0 if avg > 0 else 0.0, "times_us": [float(x) for x in t]}
    if per_process and len(per_process) > 1:
        entry["per_process_max_times_us"] = [[float(x) for x in p] for p in per_process]
    return entry


def result_item(oop: dict | None, ip: dict | None, checked: bool, iters: int) -> dict:
    """One size: nccl-tests' row object (preamble, out_of_place, in_place, terminator)."""
    first = oop or ip
    item = {"size": int(first["size_bytes"]), "count": int(first["count"]), "type": str(first["dtype"]),
            "redop": str(first["redop"]), "root": root_field(first["root"] if first["root"] is not None else -1)}
    for key, row in (("out_of_place", oop), ("in_place", ip)):
        item[key] = placement_entry(row, checked) if row is not None else None
        if row is not None and row.get("_times_us"):
            item[f"{key}_per_iter"] = per_iter_entry(row["_times_us"], row.get("_per_process_us"))
    item["actual_iterations"] = int(iters)
    item["experiment_name"] = ""
    return item


def free_path(path: Path) -> Path:
    """nccl-tests opens -J's file with "wx": when it exists, FILE.0, FILE.1, ... are tried in turn."""
    candidate, n = path, 0
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{n}")
        n += 1
    return candidate


def path_for_op(path: str | Path, op: str, several: bool) -> Path:
    target = Path(path)
    if not several:
        return target
    return target.with_name(f"{target.stem}-{op}{target.suffix or '.json'}")


class NcclTestsJson:
    """One op's -J file, rewritten (atomically) after every size."""

    def __init__(self, path: Path, op: str, header: dict, config: dict):
        self.path = free_path(path)
        # Reserve the name now, as nccl-tests' fopen("wx") does, so two runs never write one file.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        self.op, self.header, self.config = op, header, {**config, "collective": op}
        self.results: list[dict] = []
        self.busbw: list[float] = []
        self.nwrong = 0
        self.flush()

    def add(self, item: dict) -> None:
        self.results.append(item)
        for key in ("out_of_place", "in_place"):
            entry = item.get(key)
            if entry:
                self.busbw.append(entry["bus_bw"])
                self.nwrong += int(entry["nwrong"] or 0)
        self.flush()

    def document(self, final: bool, min_bw: float | None = None, errors: list[str] | None = None) -> dict:
        doc = {**self.header, "config": self.config, "results": self.results}
        if final:
            avg = sum(self.busbw) / len(self.busbw) if self.busbw else float("nan")
            doc["out_of_bounds"] = {"count": int(self.nwrong), "okay": json_bool(self.nwrong == 0)}
            doc["average_bus_bandwidth"] = {
                "bandwidth": avg, "okay": "unchecked" if min_bw is None else json_bool(avg >= min_bw * 0.9)}
            doc["errors"] = list(errors or [])
            doc["end_time"] = now_local()
        return doc

    def flush(self, final: bool = False, min_bw: float | None = None, errors: list[str] | None = None) -> None:
        atomic_write_bytes(self.path, encode(self.document(final, min_bw, errors)))


def now_local() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())


def header(args: list[str], nccl_version) -> dict:
    return {"version": JSON_FILE_VERSION, "start_time": now_local(), "args": [str(a) for a in args],
            "env": environment_list(), "nccl_version": nccl_version_code(nccl_version)}


def config_block(cfg, devices: list[dict]) -> dict:
    out: dict = {"nthreads": 1, "ngpus": 1, "minimum_bytes": int(cfg.min_bytes), "maximum_bytes": int(cfg.max_bytes)}
    if cfg.step_factor and cfg.step_factor > 1:
        out["step_factor"] = int(cfg.step_factor)
    else:
        out["step_bytes"] = int(cfg.step_bytes or (1 << 20))
    out.update({
        "warmup_iters": int(cfg.warmup), "iterations": int(cfg.iters), "aggregated_iterations": int(cfg.agg_iters),
        "validation": int(cfg.check_iters), "graph": int(cfg.graph_launches),
        "blocking_collectives": json_bool(bool(cfg.blocking)), "per_iter_timing": json_bool(cfg.timing == "per-iter"),
        "per_iter_skip": 0, "parallel_init": json_bool(False), "devices": devices,
    })
    return out


def device_entry(info: dict, group: int, device_info: str) -> dict:
    gpu = info.get("gpu")
    return {"rank": int(info["rank"]), "group": int(group), "pid": int(info["pid"]), "hostname": str(info["host"]),
            "device": int(gpu) if gpu is not None else -1, "device_hex": device_hex(info.get("bus_id")),
            "device_info": device_info}


def device_hex(bus_id: str | None) -> str:
    """nccl-tests prints [%04x:%02x:%02x] (domain:bus:device); '0000:1b:00.0' -> '0000:1b:00'; CPU: 'cpu'."""
    if not bus_id:
        return "cpu"
    return str(bus_id).split(".")[0].lower()
