"""RDMA port link state from saved `ibstat`, `ibstatus`, `ibv_devinfo [-v]` text or a sysfs tree.

One reader for every place that needs to know whether a NIC port is up and at what rate: node health checks,
the analyzer (link state as evidence) and `topo discover` (NIC speeds and link layers).

Formats (facts from rdma-core: infiniband-diags/ibstat.c, infiniband-diags/scripts/ibstatus,
libibverbs/examples/devinfo.c, and the kernel's /sys/class/infiniband ABI):
- ibstat: "CA 'mlx5_0'" blocks, "Port 1:" sub-blocks, "State: Active", "Physical state: LinkUp", "Rate: 400",
  "Base lid: 12", "Port GUID: 0x...", "Link layer: InfiniBand".
- ibstatus: "Infiniband device 'mlx5_0' port 1 status:" then "state: 4: ACTIVE", "phys state: 5: LinkUp",
  "rate: 400 Gb/sec (4X NDR)", "base lid: 0xc", "default gid: fe80:...", "link_layer: InfiniBand".
- ibv_devinfo: "hca_id: mlx5_0", "port: 1", "state: PORT_ACTIVE (4)", "link_layer: Ethernet"; with -v also
  "active_width: 4X (2)", "active_speed: 25.0 Gbps (32)" (per lane) and "phys_state: LINK_UP (5)".
- sysfs: <root>/sys/class/infiniband/<dev>/ports/<n>/{state,phys_state,rate,link_layer,lid}; `root` may also be
  the class/infiniband folder itself.

Real outputs vary: CAs sorted lexically (mlx5_10 before mlx5_2), numeric prefixes ("4: ACTIVE"), tabs or spaces,
a launcher prefix per line ("cn001: " from pdsh/clush), warnings interleaved ("ibwarn: ...", "ibpanic: ...").
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from fabricbench.errors import UsageError

# IBTA port states and physical states by number (rdma-core ibstat.c / ibv_port_state_str).
STATES = {0: "NOP", 1: "DOWN", 2: "INIT", 3: "ARMED", 4: "ACTIVE", 5: "ACTIVE_DEFER"}
PHYS_STATES = {0: "NoStateChange", 1: "Sleep", 2: "Polling", 3: "Disabled", 4: "PortConfigurationTraining",
               5: "LinkUp", 6: "LinkErrorRecovery", 7: "PhyTest"}
_PHYS_BY_KEY = {v.lower().replace(" ", "").replace("_", ""): v for v in PHYS_STATES.values()}
_PHYS_BY_KEY.update({"phytest": "PhyTest", "linkerrorrecovery": "LinkErrorRecovery"})


@dataclass(frozen=True)
class Port:
    ca: str  # mlx5_0
    port: int  # 1
    state: str  # ACTIVE, DOWN, INIT, ARMED (upper case); '' when not reported
    physical_state: str  # LinkUp, Polling, Disabled, Sleep, ...; '' when not reported (ibv_devinfo without -v)
    rate_gbps: float | None  # signalling rate in Gb/s as the tools print it (4X NDR = 400); None when not reported
    link_layer: str  # InfiniBand | Ethernet; '' when not reported
    lid: int | None
    guid: str | None  # port GUID (0x...), else the interface id of the default GID, else the node GUID
    source: str  # 'ibstat', 'ibstatus', 'ibv_devinfo', 'sysfs'
    host: str | None = None  # from a 'host: ' launcher prefix, the file name, or the caller
    width: str | None = None  # '4X' where reported

    @property
    def name(self) -> str:
        return f"{self.ca}:{self.port}"

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"

    @property
    def link_up(self) -> bool:
        return self.physical_state == "LinkUp" or (not self.physical_state and self.active)

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_state(text: str) -> str:
    """'4: ACTIVE', 'Active', 'PORT_ACTIVE (4)', '4' -> 'ACTIVE'."""
    text = (text or "").strip()
    if not text:
        return ""
    m = re.match(r"^(\d+)\s*:?\s*(.*)$", text)
    if m and not m.group(2):
        return STATES.get(int(m.group(1)), text)
    if m:
        text = m.group(2)
    text = re.sub(r"\s*\(\d+\)\s*$", "", text).upper()
    text = text.removeprefix("PORT_")
    return {"INITIALIZE": "INIT", "INITIALIZING": "INIT"}.get(text, text)


def normalize_phys_state(text: str) -> str:
    """'5: LinkUp', 'LINK_UP (5)', 'linkup', '5' -> 'LinkUp'."""
    text = (text or "").strip()
    if not text:
        return ""
    m = re.match(r"^(\d+)\s*:?\s*(.*)$", text)
    if m and not m.group(2):
        return PHYS_STATES.get(int(m.group(1)), text)
    if m:
        text = m.group(2)
    key = re.sub(r"\s*\(\d+\)\s*$", "", text).lower().replace("_", "").replace(" ", "")
    return _PHYS_BY_KEY.get(key, text)


def normalize_link_layer(text: str) -> str:
    low = (text or "").strip().lower()
    if low.startswith("infiniband") or low == "ib":
        return "InfiniBand"
    if low.startswith("ethernet") or low in ("eth", "roce"):
        return "Ethernet"
    return (text or "").strip()


def _lid(text: str) -> int | None:
    text = (text or "").strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)(?:\s*Gb/sec)?(?:\s*\((\d+X)[^)]*\))?")


def _rate(text: str) -> tuple[float | None, str | None]:
    """'400 Gb/sec (4X NDR)' -> (400.0, '4X'); '200' -> (200.0, None)."""
    m = _RATE.match(text or "")
    if not m:
        return None, None
    return float(m.group(1)), m.group(2)


def _gid_guid(gid: str) -> str | None:
    """Interface id (lower 64 bits) of a GID 'fe80:0000:0000:0000:506b:4b03:00f5:ce9c' -> '0x506b4b0300f5ce9c'."""
    parts = (gid or "").strip().split(":")
    if len(parts) != 8 or not all(re.fullmatch(r"[0-9a-fA-F]{1,4}", p) for p in parts):
        return None
    tail = "".join(p.zfill(4) for p in parts[4:]).lower()
    return None if int(tail, 16) == 0 else "0x" + tail


def _colon_guid(text: str) -> str | None:
    """ibv_devinfo node_guid '7cfe:9003:00a5:95c0' -> '0x7cfe900300a595c0'."""
    parts = (text or "").strip().split(":")
    if len(parts) == 4 and all(re.fullmatch(r"[0-9a-fA-F]{4}", p) for p in parts):
        return "0x" + "".join(parts).lower()
    return None


# A per-line launcher prefix such as pdsh's "cn001: ". Only taken as a host when the rest of the line is
# recognisable tool output, so that "State: Active" is never read as host 'State'.
_HOST_PREFIX = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*):\s(.*)$")
_KNOWN_KEYS = {"ca type", "number of ports", "firmware version", "hardware version", "node guid",
               "system image guid", "state", "physical state", "rate", "base lid", "lmc", "sm lid",
               "capability mask", "port guid", "link layer", "default gid", "phys state", "link_layer",
               "base lid", "sm lid", "transport", "fw_ver", "node_guid", "sys_image_guid", "vendor_id",
               "vendor_part_id", "hw_ver", "board_id", "phys_port_cnt", "port", "max_mtu", "active_mtu",
               "sm_lid", "port_lid", "port_lmc", "active_width", "active_speed", "phys_state", "hca_id"}


def _split_host(line: str) -> tuple[str | None, str]:
    m = _HOST_PREFIX.match(line)
    if not m:
        return None, line
    host, rest = m.group(1), m.group(2)
    if host.strip().lower() in _KNOWN_KEYS or host.lower() in ("ca", "port", "infiniband"):
        return None, line
    stripped = rest.strip()
    if (stripped.startswith(("CA '", "Infiniband device '", "hca_id:", "Port ", "port:"))
            or stripped.split(":", 1)[0].strip().lower() in _KNOWN_KEYS or not stripped):
        return host, rest
    return None, line


def split_by_host(text: str) -> dict[str | None, str]:
    """Lines grouped by their launcher prefix ('cn001: ...' from pdsh/clush/srun -l), in order; None for
    unprefixed lines. Prefixed hosts' lines may interleave; each host's lines keep their order."""
    groups: dict[str | None, list[str]] = {}
    for raw in text.splitlines():
        host, line = _split_host(raw.rstrip("\r"))
        groups.setdefault(host, []).append(line)
    return {h: "\n".join(lines) for h, lines in groups.items()}


def detect_format(text: str) -> str | None:
    for line in text.splitlines():
        _, line = _split_host(line)
        s = line.strip()
        if s.startswith("CA '"):
            return "ibstat"
        if s.startswith("Infiniband device '"):
            return "ibstatus"
        if s.startswith("hca_id:"):
            return "ibv_devinfo"
    return None


class _Builder:
    """Collects one port's fields; emits a Port when the next port (or the end) is reached."""

    def __init__(self, source: str, default_host: str | None):
        self.source = source
        self.default_host = default_host
        self.ports: list[Port] = []
        self.cur: dict | None = None

    def start(self, host: str | None, ca: str, port: int, **base) -> None:
        self.flush()
        self.cur = {"host": host or self.default_host, "ca": ca, "port": port, **base}

    def set(self, key: str, value) -> None:
        if self.cur is not None and value not in (None, ""):
            self.cur[key] = value

    def flush(self) -> None:
        c = self.cur
        if c is None:
            return
        rate = c.get("rate")
        width = c.get("width")
        if rate is None and c.get("lane_gbps") is not None and width:
            m = re.match(r"(\d+)X", width)
            if m:
                rate = round(c["lane_gbps"] * int(m.group(1)), 3)
        self.ports.append(Port(ca=c["ca"], port=c["port"], state=c.get("state", ""),
                               physical_state=c.get("phys", ""), rate_gbps=rate,
                               link_layer=c.get("link_layer", ""), lid=c.get("lid"),
                               guid=c.get("guid") or c.get("node_guid"), source=self.source,
                               host=c.get("host"), width=width))
        self.cur = None


def _kv(line: str) -> tuple[str, str] | None:
    if ":" not in line:
        return None
    key, value = line.split(":", 1)
    return key.strip().lower(), value.strip()


def parse_ibstat(text: str, host: str | None = None) -> list[Port]:
    b = _Builder("ibstat", host)
    ca: str | None = None
    node_guid: str | None = None
    for raw in text.splitlines():
        s = raw.strip()
        m = re.match(r"^CA '([^']+)'", s)
        if m:
            b.flush()
            ca, node_guid = m.group(1), None
            continue
        if ca is None:
            continue
        m = re.match(r"^Port (\d+):\s*$", s)
        if m:
            b.start(None, ca, int(m.group(1)), node_guid=node_guid)
            continue
        kv = _kv(s)
        if not kv:
            continue
        key, value = kv
        if key == "node guid":
            node_guid = value.lower()
        elif key == "state":
            b.set("state", normalize_state(value))
        elif key == "physical state":
            b.set("phys", normalize_phys_state(value))
        elif key == "rate":
            b.set("rate", _rate(value)[0])
        elif key == "base lid":
            b.set("lid", _lid(value))
        elif key == "port guid":
            b.set("guid", value.lower())
        elif key == "link layer":
            b.set("link_layer", normalize_link_layer(value))
    b.flush()
    return b.ports


def parse_ibstatus(text: str, host: str | None = None) -> list[Port]:
    b = _Builder("ibstatus", host)
    for raw in text.splitlines():
        s = raw.strip()
        m = re.match(r"^Infiniband device '([^']+)' port (\d+) status:", s)
        if m:
            b.start(None, m.group(1), int(m.group(2)))
            continue
        kv = _kv(s)
        if not kv or b.cur is None:
            continue
        key, value = kv
        if key == "state":
            b.set("state", normalize_state(value))
        elif key == "phys state":
            b.set("phys", normalize_phys_state(value))
        elif key == "rate":
            rate, width = _rate(value)
            b.set("rate", rate)
            b.set("width", width)
        elif key == "base lid":
            b.set("lid", _lid(value))
        elif key == "default gid":
            b.set("guid", _gid_guid(value))
        elif key == "link_layer":
            b.set("link_layer", normalize_link_layer(value))
    b.flush()
    return b.ports


def parse_ibv_devinfo(text: str, host: str | None = None) -> list[Port]:
    b = _Builder("ibv_devinfo", host)
    ca: str | None = None
    node_guid: str | None = None
    for raw in text.splitlines():
        s = raw.strip()
        kv = _kv(s)
        if not kv:
            continue
        key, value = kv
        if key == "hca_id":
            b.flush()
            ca, node_guid = (value.split() or [""])[0], None
            continue
        if ca is None:
            continue
        if key == "node_guid":
            node_guid = _colon_guid(value)
        elif key == "port" and re.fullmatch(r"\d+", value):
            b.start(None, ca, int(value), node_guid=node_guid)
        elif b.cur is None:
            continue
        elif key == "state":
            b.set("state", normalize_state(value))
        elif key == "phys_state":
            b.set("phys", normalize_phys_state(value))
        elif key == "port_lid":
            b.set("lid", _lid(value))
        elif key == "link_layer":
            b.set("link_layer", normalize_link_layer(value))
        elif key == "active_width":
            m = re.match(r"(\d+X)", value)
            b.set("width", m.group(1) if m else None)
        elif key == "active_speed":
            m = re.match(r"(\d+(?:\.\d+)?)\s*Gbps", value)
            b.set("lane_gbps", float(m.group(1)) if m else None)
    b.flush()
    return b.ports


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _sysfs_class_dir(root: Path) -> Path | None:
    for candidate in (root / "sys/class/infiniband", root / "class/infiniband", root):
        if candidate.is_dir() and any((d / "ports").is_dir() for d in candidate.iterdir() if d.is_dir()):
            return candidate
    return None


def read_sysfs(root: Path | str, host: str | None = None) -> list[Port]:
    """Ports under <root>/sys/class/infiniband (root='/' for the live machine), <root>/class/infiniband or
    <root> itself."""
    root = Path(root)
    ib = _sysfs_class_dir(root)
    if ib is None:
        raise UsageError(f"{root}: no sys/class/infiniband/<device>/ports/ folder there; give a saved ibstat, "
                         "ibstatus or ibv_devinfo output or the root of a copied /sys tree")
    ports: list[Port] = []
    for dev in sorted(ib.iterdir(), key=lambda p: _natural(p.name)):
        node_guid = _colon_guid(_read(dev / "node_guid"))
        port_dirs = sorted((dev / "ports").glob("*"), key=lambda p: _natural(p.name)) if (dev / "ports").is_dir() else []
        for pdir in port_dirs:
            if not (pdir.name.isascii() and pdir.name.isdigit()):
                continue
            rate, width = _rate(_read(pdir / "rate"))
            ports.append(Port(ca=dev.name, port=int(pdir.name), state=normalize_state(_read(pdir / "state")),
                              physical_state=normalize_phys_state(_read(pdir / "phys_state")), rate_gbps=rate,
                              link_layer=normalize_link_layer(_read(pdir / "link_layer")),
                              lid=_lid(_read(pdir / "lid")),
                              guid=_gid_guid(_read(pdir / "gids" / "0")) or node_guid, source="sysfs",
                              host=host, width=width))
    return ports


def _natural(name: str) -> tuple:
    """mlx5_2 before mlx5_10 (the tools list CAs lexically; people read them in number order)."""
    return tuple(int(t) if t.isascii() and t.isdigit() else t for t in re.split(r"([0-9]+)", name))


def parse_text(text: str, host: str | None = None, name: str = "input") -> list[Port]:
    """Ports from any of the three tools' text, detected from its content."""
    fmt = detect_format(text)
    if fmt is None:
        raise UsageError(f"{name}: not ibstat, ibstatus or ibv_devinfo output (no \"CA '...'\", "
                         "\"Infiniband device '...'\" or \"hca_id:\" line); save the tool's full output")
    parser = {"ibstat": parse_ibstat, "ibstatus": parse_ibstatus, "ibv_devinfo": parse_ibv_devinfo}[fmt]
    ports = []
    for prefix, chunk in split_by_host(text).items():
        ports += parser(chunk, prefix or host)
    return sorted(ports, key=lambda p: (p.host or "", _natural(p.ca), p.port))


def looks_like_link_state(path: Path | str) -> bool:
    """True for a saved ibstat/ibstatus/ibv_devinfo file or a sysfs tree with RDMA ports."""
    path = Path(path)
    if path.is_dir():
        return _sysfs_class_dir(path) is not None
    try:
        with path.open(errors="replace") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    return detect_format(head) is not None


def read_ports(path: Path | str, host: str | None = None) -> list[Port]:
    """Ports from a saved tool output file or a sysfs root. Raises UsageError (one line) on anything else."""
    path = Path(path)
    if path.is_dir():
        return read_sysfs(path, host)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_text(text, host, name=str(path))
