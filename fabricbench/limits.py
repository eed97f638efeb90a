"""Limits on untrusted input: numbers (finite, in range, named), input files (regular, bounded) and YAML
(aliases bounded, no duplicate keys, bounded depth). Every refusal is a UsageError naming the field or file.

The operator's options are trusted to mean what they say, but not to be sane: `--timeout nan`, `--poll -1`,
`-e 1T -i 1` are refused before anything starts. Files (results, tool outputs, topologies, criteria,
baselines) may come from elsewhere and are read only through `read_bytes`/`read_text`/`load_yaml`/
`load_json` here (docs/security.md).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from fabricbench.errors import UsageError

MAX_INPUT_BYTES = 256 << 20  # a text input (tool output, YAML, JSON); results.parquet has its own limit
MAX_PARQUET_BYTES = 4 << 30
MAX_DEPTH = 64  # nesting of YAML/JSON documents
MAX_NODES = 16384  # nodes in a sweep, simulation or job
MAX_RANKS_PER_NODE = 1024


def number(value, field: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           integer: bool = False):
    """`value` if it is a finite number within [lo, hi] ((lo, hi] with lo_open); UsageError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{field} must be a number, got {str(value)[:40]!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{field} must be a finite number, got {value}")
    if integer and value != int(value):
        raise UsageError(f"{field} must be a whole number, got {value}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        bound = "positive" if lo_open and lo == 0 else f"above {lo:g}" if lo_open else f"at least {lo:g}"
        raise UsageError(f"{field} must be {bound}, got {value:g}")
    if hi is not None and value > hi:
        raise UsageError(f"{field} {value:g} is above the limit {hi:g}")
    return value


def positive(value, field: str, hi: float | None = None):
    return number(value, field, lo=0, lo_open=True, hi=hi)


# -- files -----------------------------------------------------------------------------------------------------
def _display(path) -> str:
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # a non-UTF-8 name prints, escaped


def check_regular(path, what: str = "input", max_bytes: int = MAX_INPUT_BYTES) -> os.stat_result:
    """stat `path`: a regular file no larger than `max_bytes`, or UsageError (FIFOs, devices, directories)."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise UsageError(f"{what} {_display(path)}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, device or socket)"
        raise UsageError(f"{what} {_display(path)}: {kind}; give a regular file")
    if st.st_size > max_bytes:
        raise UsageError(f"{what} {_display(path)}: {st.st_size / 1e6:.0f} MB is more than the "
                         f"{max_bytes / 1e6:.0f} MB an input may have")
    return st


def read_bytes(path, what: str = "input", max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, opened without blocking (a FIFO never hangs)."""
    check_regular(path, what, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as err:
        raise UsageError(f"{what} {_display(path)}: cannot read ({err.strerror or err})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise UsageError(f"{what} {_display(path)}: not a regular file; give a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise UsageError(f"{what} {_display(path)}: cannot read ({err.strerror or err})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UsageError(f"{what} {_display(path)}: grew past the {max_bytes / 1e6:.0f} MB limit while read")
    return data


def read_text(path, what: str = "input", max_bytes: int = MAX_INPUT_BYTES, errors: str = "strict") -> str:
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise UsageError(f"{what} {_display(path)}: not UTF-8 text (byte {err.start}); give a text file") from None


# -- structured documents --------------------------------------------------------------------------------------
def check_depth(obj, what: str, limit: int = MAX_DEPTH) -> None:
    """Refuse documents nested deeper than `limit` (iteratively: no RecursionError)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                raise UsageError(f"{what}: nested more than {limit} levels deep")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


MAX_YAML_VALUES = 200_000  # values in a YAML document once its aliases are expanded


def _expanded_size(root, limit: int) -> None:
    """Refuse a composed YAML document whose aliases expand to more than `limit` values (billion laughs) or
    refer to themselves. Iterative, memoized on shared nodes: cheap however the aliases are nested."""
    import yaml

    memo: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if isinstance(node, yaml.MappingNode):
            children = [c for pair in node.value for c in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if finished:
            open_nodes.discard(key)
            memo[key] = 1 + sum(memo[id(c)] for c in children)
            if memo[key] > limit:
                raise yaml.constructor.ConstructorError(None, None, f"aliases expand to more than {limit} values",
                                                        node.start_mark)
            continue
        if key in memo:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise yaml.constructor.ConstructorError(None, None, "an alias refers to itself", child.start_mark)
            if id(child) not in memo:
                stack.append((child, False))


def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader bounding what aliases expand to (no billion laughs), refusing duplicate keys and deep nesting."""

        def compose_document(self):
            node = super().compose_document()
            if node is not None:
                _expanded_size(node, MAX_YAML_VALUES)
            return node

        def compose_node(self, parent, index):
            depth = getattr(self, "_fb_depth", 0) + 1
            if depth > MAX_DEPTH:
                raise yaml.constructor.ConstructorError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                        self.peek_event().start_mark)
            self._fb_depth = depth
            try:
                return super().compose_node(parent, index)
            finally:
                self._fb_depth = depth - 1

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {str(key)[:40]!r}",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader


def parse_yaml(text: str, what: str):
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"{what}: not valid YAML{where}: {problem}") from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as err:  # e.g. a 5000-digit number
        raise UsageError(f"{what}: cannot be read as YAML ({' '.join(str(err).split())[:120] or type(err).__name__})") from None


def load_yaml(path, what: str = "YAML file", max_bytes: int = MAX_INPUT_BYTES):
    return parse_yaml(read_text(path, what, max_bytes), f"{what} {_display(path)}")


def parse_json(text: str | bytes, what: str, allow_nan: bool = True):
    try:
        obj = json.loads(text, parse_constant=None if allow_nan else _no_constant)
    except RecursionError:
        raise UsageError(f"{what}: nested too deep") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{what}: not valid JSON ({str(err)[:120]})") from None
    check_depth(obj, what)
    return obj


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def load_json(path, what: str = "JSON file", max_bytes: int = MAX_INPUT_BYTES, allow_nan: bool = True):
    return parse_json(read_bytes(path, what, max_bytes), f"{what} {_display(path)}", allow_nan)


def writable_output(path, what: str = "--out") -> Path:
    """Refuse, before any work is done, an output file path that is a directory or a device/FIFO (an atomic
    rename would replace the device node)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError:
        return p  # a new file: the write itself reports a parent it cannot create or a full filesystem
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{what} {_display(p)} is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {_display(p)} is not a regular file; give a file name")
    return p
