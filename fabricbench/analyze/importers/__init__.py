"""Importers: one module per input format; `load(path)` sniffs the format and returns a `Dataset`.

Formats: fabricbench results (a directory with results.parquet, or the .parquet file), nccl-tests text output
(any *_perf log, lenient) and JSON (`-J`), nvbandwidth text and JSON, perftest `ib_write_bw` output.
Every failure is a `UsageError` naming the file (exit 2), never a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fabricbench.analyze.model import Dataset
from fabricbench.errors import UsageError

MAX_TEXT_BYTES = 256 * 1024 * 1024


def _read_text(path: Path) -> str:
    from fabricbench import limits

    return limits.read_text(path, "tool output", MAX_TEXT_BYTES, errors="replace")


def sniff(path: Path) -> str:
    """The format of `path`: fabricbench | nccl-tests-json | nvbandwidth-json | nccl-tests | nvbandwidth | ib_write_bw |
    link-state (saved ibstat/ibstatus/ibv_devinfo, or a copied sysfs tree). NCCL_DEBUG=INFO logs go with
    nccl-tests (alone or interleaved with its rows)."""
    if path.is_dir():
        if (path / "results.parquet").exists():
            return "fabricbench"
        from fabricbench.linkstate import looks_like_link_state

        if looks_like_link_state(path):
            return "link-state"
        raise UsageError(f"{path}: a directory without results.parquet (not a fabricbench results directory)")
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    from fabricbench import limits

    limits.check_regular(path, "input", limits.MAX_PARQUET_BYTES)  # FIFOs and devices never hang or fill memory
    if path.suffix == ".parquet":
        return "fabricbench"
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PAR1"):
        return "fabricbench"
    text = head.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    launcher_tag = re.match(r"\[[\d,]+\](?:<std|\s|#|:)", stripped)  # "[0] ", "[1,0]<stdout>:": text, not JSON
    if stripped.startswith("{") or (stripped.startswith("[") and not launcher_tag):
        if "nvbandwidth" in text or "testcases" in text or "bandwidth_matrix" in text:
            return "nvbandwidth-json"
        return "nccl-tests-json"
    full = _read_text(path)
    if "RDMA_Write BW Test" in full or "BW average[" in full or ("#bytes" in full and "#iterations" in full):
        return "ib_write_bw"
    from fabricbench.analyze.importers.nccl_debug import has_nccl_log
    from fabricbench.linkstate import detect_format

    # a job log may start with a few ibv_devinfo lines before NCCL's own output: that is a log, not link state
    if detect_format(full[:65536]) is not None and not has_nccl_log(full) and "# nThread" not in full:
        return "link-state"
    if "nvbandwidth" in full or ("Running " in full and "GPU(row)" in full) or full.lstrip().startswith("SUM "):
        return "nvbandwidth"
    return "nccl-tests"


def load(spec: str | Path, host: str | None = None) -> Dataset:
    path = Path(spec)
    kind = sniff(path)
    if kind == "fabricbench":
        from fabricbench.analyze.importers.fabricbench_results import load_results

        return load_results(path)
    if kind == "link-state":
        from fabricbench.analyze.importers.link_state import load_link_state

        return load_link_state(path, host=host)
    if kind in ("nccl-tests-json", "nvbandwidth-json"):
        text = _read_text(path)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); truncated?") from None
        except RecursionError:
            raise UsageError(f"{path}: JSON nested too deep to be a tool output") from None
        from fabricbench import limits

        limits.check_depth(doc, str(path))
        if kind == "nvbandwidth-json":
            from fabricbench.analyze.importers.nvbandwidth import parse_json

            return parse_json(doc, str(path))
        from fabricbench.analyze.importers.nccl_tests_json import parse_json

        return parse_json(doc, str(path))
    text = _read_text(path)
    if kind == "ib_write_bw":
        from fabricbench.analyze.importers.ib_write_bw import parse_text

        return parse_text(text, str(path), host=host)
    if kind == "nvbandwidth":
        from fabricbench.analyze.importers.nvbandwidth import parse_text

        return parse_text(text, str(path), host=host)
    from fabricbench.analyze.importers import nccl_debug
    from fabricbench.analyze.importers.nccl_tests_text import parse_text

    logged = nccl_debug.has_nccl_log(text)
    try:
        ds = parse_text(text, str(path))
    except UsageError:
        if not logged:
            raise
        return nccl_debug.parse_log_only(text, str(path))  # an NCCL_DEBUG=INFO log without nccl-tests rows
    return nccl_debug.attach(ds, text, str(path)) if logged else ds


def load_all(specs: list[str], host: str | None = None) -> Dataset:
    from fabricbench.analyze.model import merge

    if not specs:
        raise UsageError("no results given: name one or more results directories or tool outputs")
    return merge([load(s, host=host) for s in specs])
