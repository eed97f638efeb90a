"""Link state (saved ibstat / ibstatus / ibv_devinfo output, or a copied sysfs tree) as an analyzer input.

Which host a file describes: the per-line launcher prefix (pdsh/clush 'cn001: ...'), else --host, else the file
name ('cn001.ibstat', 'ibstat-cn001.txt', 'cn001-ibstatus.log') or, for a sysfs tree, the folder's name."""

from __future__ import annotations

import re
from pathlib import Path

from fabricbench.analyze.model import Dataset
from fabricbench.linkstate import read_ports

TOOL_WORDS = re.compile(r"(?i)^(?:ibstat(?:us)?|ibv_devinfo|ibv-devinfo|devinfo|sysfs|linkstate|link-state)[-_.]?|"
                        r"[-_.]?(?:ibstat(?:us)?|ibv_devinfo|ibv-devinfo|devinfo|sysfs|linkstate|link-state)$")


def host_from_name(path: Path) -> str | None:
    name = path.name if path.is_dir() else path.name.split(".")[0]
    if path.is_dir() and name in ("sys", "infiniband", "class"):
        return None
    stem = TOOL_WORDS.sub("", name) or None
    return stem if stem and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem) else None


def load_link_state(path: Path, host: str | None = None) -> Dataset:
    ports = read_ports(path, host=host or host_from_name(path))
    ds = Dataset(sources=[str(path)])
    ds.extra["link_state"] = ports
    if not ports:
        ds.caveats.append(f"{path}: link state with no ports in it")
    return ds
