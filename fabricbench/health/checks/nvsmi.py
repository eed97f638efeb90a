"""`nvidia-smi -q` text into one nested dict per GPU (sections by indentation, 'Key : Value' leaves).

Layout (every driver since 450): a 'GPU 00000000:07:00.0' line starts a GPU; below it sections such as
'ECC Errors' > 'Volatile' > 'DRAM Uncorrectable : 0' and 'Remapped Rows' > 'Pending : No'. Older drivers
name the ECC leaves 'Double Bit' > 'Device Memory'; both are read by `find`.
"""

from __future__ import annotations

import re

_GPU = re.compile(r"^GPU\s+([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])\s*$")


def parse(text: str) -> list[dict]:
    gpus: list[dict] = []
    stack: list[tuple[int, dict]] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        m = _GPU.match(line.strip()) if not line.startswith((" ", "\t")) else None
        if m:
            gpu = {"bus_id": m.group(1)}
            gpus.append(gpu)
            stack = [(-1, gpu)]
            continue
        if not stack:
            continue
        indent = len(line) - len(line.lstrip())
        while len(stack) > 1 and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if ":" in line:
            key, value = line.split(":", 1)
            key, value = key.strip(), value.strip()
            if value:
                parent[key] = value
                continue
            line = key
        section: dict = {}
        parent[line.strip()] = section
        stack.append((indent, section))
    return gpus


def find(gpu: dict, *path: str):
    """The value at `path` (section names, then the leaf), or None."""
    node = gpu
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def number(value) -> int | None:
    try:
        return int(str(value).split()[0])
    except (ValueError, IndexError):
        return None  # 'N/A', missing
