"""Read topology files (or names of shipped ones); every failure is one line naming the file and the field."""

from __future__ import annotations

import os
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from fabricbench.errors import UsageError
from fabricbench.topology.schema import Topology

ENV_DIR = "FABRICBENCH_TOPOLOGIES"


def topology_dirs() -> list[Path]:
    """Where names are looked up: $FABRICBENCH_TOPOLOGIES, the checkout's topologies/, packaged data."""
    dirs = []
    if os.environ.get(ENV_DIR):
        dirs.append(Path(os.environ[ENV_DIR]))
    dirs.append(Path(__file__).resolve().parents[2] / "topologies")
    dirs.append(Path(__file__).resolve().parent / "data")
    return [d for d in dirs if d.is_dir()]


def list_topologies() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in topology_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def resolve(spec: str) -> Path:
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists() or os.sep in spec:
        if not path.is_file():
            raise UsageError(f"{spec}: no such topology file")
        return path
    known = list_topologies()
    if spec in known:
        return known[spec]
    raise UsageError(f"{spec!r} is neither a file nor a shipped topology; known: {', '.join(known) or 'none'}")


def _model_in(annotation: typing.Any) -> typing.Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is dict and len(args) == 2:
        inner = _model_in(args[1])
        return _DictOf(inner) if inner is not None else None
    for arg in args:
        inner = _model_in(arg)
        if inner is not None:
            return inner
    return None


class _DictOf:
    def __init__(self, inner):
        self.inner = inner


def _walk_allowed(loc: tuple) -> list[str] | None:
    cls: typing.Any = Topology
    parts = list(loc[:-1])
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(cls, _DictOf):
            cls = cls.inner  # the dict key (a node type name) selects a value of the inner model
            i += 1
            continue
        if isinstance(part, int):
            i += 1
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
        field = cls.model_fields.get(part)
        if field is None:
            return None
        cls = _model_in(field.annotation)
        i += 1
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    return None


def format_validation_error(err: ValidationError, source: str) -> str:
    parts = []
    for item in err.errors()[:3]:
        loc = tuple(item.get("loc", ()))
        field = ".".join(str(x) for x in loc) or "(top level)"
        msg = item.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if item.get("type") == "extra_forbidden":
            allowed = _walk_allowed(loc)
            msg = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif item.get("type") == "missing":
            msg = "required but missing"
        parts.append(f"{field}: {msg}")
    more = len(err.errors()) - 3
    tail = f" (and {more} more)" if more > 0 else ""
    return f"{source}: " + "; ".join(parts) + tail


def parse_topology(data: object, source: str) -> Topology:
    if not isinstance(data, dict):
        raise UsageError(f"{source}: a topology file is a YAML mapping (name, node_types, fabric, ...); "
                         f"got {type(data).__name__}")
    try:
        return Topology.model_validate(data)
    except ValidationError as err:
        raise UsageError(format_validation_error(err, source)) from None
    except (ValueError, TypeError) as err:  # raised from inside validators in odd inputs
        raise UsageError(f"{source}: {err}") from None


def load_text(text: str, source: str) -> Topology:
    from fabricbench import limits

    # no aliases (billion laughs), no duplicate keys, bounded depth; 5000-digit numbers are one line too
    return parse_topology(limits.parse_yaml(text, source), source)


def load_topology(spec: str | os.PathLike) -> Topology:
    from fabricbench import limits

    path = resolve(str(spec))
    text = limits.read_text(path, "topology", 16 << 20)  # regular file, bounded, UTF-8
    return load_text(text, str(path))


def dump_topology(topo: Topology) -> str:
    data = topo.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    shown = "".join(ch if ch.isprintable() else " " for ch in topo.name)  # a comment stays one line
    header = f"# fabricbench topology: {shown}\n# format: docs/topology.md\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
