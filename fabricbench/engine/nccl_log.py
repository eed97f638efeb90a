"""What NCCL actually did, read from its own `NCCL_DEBUG=INFO` output.

A run that silently fell back to TCP sockets reads like a bad fabric; so does one without GPUDirect RDMA or
with a forced algorithm. NCCL says which transport it chose per peer and channel, which network and plugin it
loaded, how many channels it built and (with NCCL_DEBUG_SUBSYS=TUNING) which algorithm and protocol each call
used. This module reads that text leniently: one rank's NCCL_DEBUG_FILE or a mixed job log, with or without
the `host:pid:tid [dev] NCCL INFO` prefix, timestamps or indentation. It never raises on bad input; it returns
what it could read.

Functions:
- `summarize(text, rank=None)`: the whole text as one rank (a per-rank NCCL_DEBUG_FILE).
- `summarize_by_rank(text)`: a mixed log, one summary per (host, pid, CUDA device), sorted by NCCL rank.
- `socket_fallback(summary)`: one warning line when traffic went over NET/Socket where a fabric was expected.
- `combine(per_rank)`: the run-level record (what run.json keeps under "nccl").
- `prepare_debug_env`, `parse_rank_log`, `merge_into_run_json`, `note_line`: the capture around a run.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections import Counter
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path

TRANSPORT_KEYS = ("P2P", "SHM", "NET/IB", "NET/IB/GDRDMA", "NET/Socket", "COLLNET")
# TUNING is left out: it logs (and flushes) a line per collective call on rank 0, which would inflate
# small-message times. Set NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=...,TUNING yourself to record algorithm/protocol.
DEBUG_SUBSYS = "INIT,NET,GRAPH,ENV"
LOG_DIR = "logs"
MAX_LINE = 8192  # longer lines are cut: NCCL's own lines are < 1 KiB (its buffer); the rest is noise
MAX_WARNINGS = 50
MAX_PEERS = 512
MAX_TUNING = 1000

# NCCL's names (ncclAlgoStr / ncclProtoStr) and the numeric ids older versions print in TUNING lines.
ALGO_IDS = ("Tree", "Ring", "CollNetDirect", "CollNetChain", "NVLS", "NVLSTree", "PAT")
PROTO_IDS = ("LL", "LL128", "Simple")
_ALGO_NAMES = {a.lower(): a for a in ALGO_IDS} | {"collnet": "CollNetDirect"}
_PROTO_NAMES = {p.lower(): p for p in PROTO_IDS}

# host:pid:tid [cudaDev] -- found anywhere, so timestamps and indentation before it do not matter
_ORIGIN = re.compile(r"(?P<host>[A-Za-z0-9_.\-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\]")
_LEVEL = re.compile(r"\bNCCL (?P<level>INFO|WARN|TRACE|ABORT)\b:?")
_VERSION = re.compile(r"\bNCCL version (?P<v>\d+\.\d+\.\d+[^\s,;]*)")
_LIBCODE = re.compile(r"\bnccl-library=(?P<code>\d{4,6})\b")
# "Using network IBext_v11" (2.12+), "Using internal Network Socket" / "NET : Using internal Network IB" (2.3-2.11)
_USING_NET = re.compile(r"\bUsing (?:internal )?[Nn]etwork (?P<net>.+)$")
_ASSIGNED_NET = re.compile(r"\bAssigned NET plugin (?P<net>.+?) to comm")
_PLUGIN_LOADED = re.compile(r"NET/Plugin\s*:?\s*Loaded (?P<kind>net|coll|collnet) plugin (?P<name>.+)$", re.I)
_PLUGIN_PATH = re.compile(r"Successfully loaded external (?:network )?plugin (?P<path>\S+)")
_PLUGIN_NONE = re.compile(r"NET/Plugin\s*:?\s*(?:No plugin found|Plugin load.*returned|Could not find|"
                          r"Using internal|Failed to find|Unable to load)", re.I)
_IB_USING = re.compile(r"NET/IB\w*\s*:\s*Using (?P<rest>.*)$")
_IB_NONE = re.compile(r"NET/IB\w*\s*:\s*No device found|Failed to open libibverbs|NET/IB\w*\s*:\s*Unable to open",
                      re.I)
_SOCKET_USING = re.compile(r"NET/Socket\s*:\s*Using (?P<rest>.*)$")
_OFI_PROVIDER = re.compile(r"NET/OFI Selected [Pp]rovider is (?P<p>\S+)")
_DEV_TOKEN = re.compile(r"\[\d+\](?P<dev>[^\s\[\];]+)")
_OOB = re.compile(r"\bOOB (?P<oob>\S+)")
# Channel 00/1 : 1[0] -> 0[0] [receive] via NET/IBext_v11/0/GDRDMA/Shared     (2.12+)
# Channel 00 : 0[1b000] -> 1[43000] via P2P/IPC                               (older: busId in brackets)
_CONN = re.compile(r"\b(?:Channel|Ring|Tree) (?P<ch>\d+)(?:/(?P<ci>\d+))? : (?P<src>\d+)(?:\[[0-9A-Fa-fx]*\])? -> "
                   r"(?P<dst>\d+)(?:\[[0-9A-Fa-fx]*\])?(?: \[(?P<dir>send|receive)\])? via (?P<via>\S.*)$")
# CollNet 00/0 : 0 [receive] via COLLNET/SHARP/0/GDRDMA
_COLLNET = re.compile(r"\bCollNet (?P<ch>\d+)(?:/(?P<ci>\d+))? : (?P<src>\d+) \[(?P<dir>send|receive)\] "
                      r"via (?P<via>\S.*)$")
# Channel 00/24 :  0  7  6  5 ...   (the ring order; printed by rank 0 of each communicator)
_RING = re.compile(r"\bChannel (?P<ch>\d+)/(?P<total>\d+) :(?P<ranks>(?:\s+-?\d+)+)\s*$")
_COMM = re.compile(r"\bcomm (?P<ptr>0x[0-9A-Fa-f]+),? rank (?P<rank>\d+) n[Rr]anks (?P<nranks>\d+)")
_NNODES = re.compile(r"\bnNodes (?P<n>\d+)")
_LOCALRANKS = re.compile(r"\blocalRanks (?P<n>\d+)")
_CHANNELS = re.compile(r"(?:\bcomm (?P<ptr>0x[0-9A-Fa-f]+),?\s+)?(?P<coll>\d+) coll channels")
_NVLS_CHANNELS = re.compile(r"(?P<n>\d+) nvls channels")
_P2P_CHANNELS = re.compile(r"(?P<n>\d+) p2p channels(?! per)")
# [AllReduce: ]1048576 Bytes -> Algo 1 proto 2 time 12.3   |   AllReduce: 4194304 Bytes -> Algo RING proto SIMPLE ...
_TUNING = re.compile(r"(?:\b(?P<op>[A-Za-z]+): )?(?P<bytes>\d+) Bytes -> Algo (?P<algo>\w+) proto (?P<proto>\w+)")
_TUNING_CH = re.compile(r"channel\{Lo\.\.Hi\}=\{(?P<lo>\d+)\.\.(?P<hi>\d+)\}")
_BEST = re.compile(r"Best tuning, algorithm, (?P<algo>\w+), protocol, (?P<proto>\w+)")
_ENV = re.compile(r"\b(?P<key>NCCL_[A-Z0-9_]+) set (?:by environment )?to (?P<val>.*)$")
_RINGS_GDR = re.compile(r"Connected all rings.*\bGDR (?P<g>\d)")


def _net_class(name: str) -> str:
    """'IBext_v11' -> 'IB', 'Socket' -> 'Socket', 'AWS Libfabric' -> 'OFI', anything else: its own name."""
    low = name.strip().lower()
    if low.startswith("ib") or "sharp" in low or low.startswith("rdma"):
        return "IB"
    if low.startswith("socket"):
        return "Socket"
    if "libfabric" in low or "ofi" in low:
        return "OFI"
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "", name.strip())
    return cleaned or "other"


def classify_via(via: str) -> tuple[str, bool | None]:
    """The transport category of a connection's `via ...` text, and whether it used GPUDirect RDMA (None:
    not a network transport)."""
    v = via.strip()
    up = v.upper()
    if up.startswith("P2P") or v.lower().startswith("direct pointer"):
        return "P2P", None
    if up.startswith("SHM") or "shared memory" in v.lower():
        return "SHM", None
    if up.startswith("COLLNET"):
        return "COLLNET", "GDRDMA" in up
    if up.startswith("NVLS"):
        return "NVLS", None
    if up.startswith("NET/"):
        rest = v[4:]
        m = re.match(r"(?P<name>.+?)/\d+(?:\(\d+\))?(?:/|$)", rest)
        name = m.group("name") if m else rest.split("/")[0]
        gdr = "GDRDMA" in up
        cls = _net_class(name)
        if cls == "Socket":
            return "NET/Socket", False
        return f"NET/{cls}" + ("/GDRDMA" if gdr else ""), gdr
    head = re.sub(r"[^A-Za-z0-9_]", "", up.split("/")[0])
    return head or "OTHER", None


def _algo(raw: str) -> str:
    raw = raw.strip()
    if raw.isdigit():
        i = int(raw)
        return ALGO_IDS[i] if i < len(ALGO_IDS) else raw
    return _ALGO_NAMES.get(raw.replace("_", "").lower(), raw)


def _proto(raw: str) -> str:
    raw = raw.strip()
    if raw.isdigit():
        i = int(raw)
        return PROTO_IDS[i] if i < len(PROTO_IDS) else raw
    return _PROTO_NAMES.get(raw.lower(), raw)


def _env_list(value: str, norm) -> str:
    """NCCL_ALGO/NCCL_PROTO as set: 'ring' -> 'Ring'; anything with op syntax or '^' is kept as written."""
    if any(c in value for c in ":^;"):
        return value
    parts = [p for p in (x.strip() for x in value.split(",")) if p]
    return ",".join(norm(p) for p in parts) if parts else value


def _version_from_code(code: int) -> str:
    if code >= 20900:  # NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z since 2.9
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return f"{code // 1000}.{code // 100 % 10}.{code % 100}"


def _transport_string(counts: Mapping[str, int]) -> str:
    order = {"P2P": 0, "SHM": 1, "NVLS": 2, "NET/IB/GDRDMA": 3, "NET/IB": 4, "NET/Socket": 8, "COLLNET": 9}

    def key(k: str) -> tuple[int, str]:
        if k in order:
            return order[k], k
        return (5 if k.startswith("NET/") else 7), k

    return "+".join(sorted((k for k, n in counts.items() if n), key=key))


class _Acc:
    """What one rank (or one log, read as one rank) said."""

    def __init__(self) -> None:
        self.host: str | None = None
        self.pid: int | None = None
        self.dev: int | None = None
        self.version: str | None = None
        self.version_code: str | None = None
        self.network: str | None = None
        self.assigned_net: str | None = None
        self.net_plugin: str | None = None
        self.net_plugin_path: str | None = None
        self.collnet_plugin: str | None = None
        self.net_provider: str | None = None
        self.ib_devices: list[str] = []
        self.ib_no_device = False
        self.ib_note: str | None = None
        self.oob: str | None = None
        self.socket_devices: list[str] = []
        self.env: dict[str, str] = {}
        self.transports: Counter = Counter()
        self.peers: dict[tuple, dict] = {}
        self.conn_channels: set[int] = set()
        self.gdr_conn: list[bool] = []
        self.gdr_hint: bool | None = None
        self.comms: dict[str, dict] = {}
        self.current: str | None = None
        self.loose: dict = {}
        self.tuning: dict[tuple, int] = {}
        self.best: Counter = Counter()
        self.warnings: list[str] = []
        self.collnet_failed = False
        self.lines = 0

    # -- one message ----------------------------------------------------------------------------------------
    def feed(self, msg: str, level: str | None) -> None:
        self.lines += 1
        if level == "WARN":
            text = msg.strip()
            if "Cannot initialize CollNet" in text:
                self.collnet_failed = True
            if text and text not in self.warnings and len(self.warnings) < MAX_WARNINGS:
                self.warnings.append(text)
            return
        if " via " in msg:
            if self._connection(msg):
                return
        if "NCCL version" in msg:
            m = _VERSION.search(msg)
            if m:
                self.version = m.group("v")
                return
        if "Channel " in msg and " : " in msg:
            m = _RING.search(msg)
            if m:
                self._comm_field("ring_channels", int(m.group("total")))
                return
        if "comm 0x" in msg:
            m = _COMM.search(msg)
            if m:
                self._comm(m, msg)
        if "coll channels" in msg:
            m = _CHANNELS.search(msg)
            if m:
                self._comm_field("channels", int(m.group("coll")), m.group("ptr"))
                n = _NVLS_CHANNELS.search(msg)
                if n:
                    self._comm_field("nvls_channels", int(n.group("n")), m.group("ptr"))
                p = _P2P_CHANNELS.search(msg)
                if p:
                    self._comm_field("p2p_channels", int(p.group("n")), m.group("ptr"))
                return
        if "Bytes -> Algo" in msg:
            m = _TUNING.search(msg)
            if m:
                self._tuning(m, msg)
                return
        if "Best tuning" in msg:
            m = _BEST.search(msg)
            if m:
                self.best[(_algo(m.group("algo")), _proto(m.group("proto")))] += 1
                return
        if "NCCL_" in msg and " to " in msg:
            m = _ENV.search(msg)
            if m:
                val = m.group("val").strip()
                if val.endswith(".") and not val.endswith(".."):
                    val = val[:-1]
                self.env[m.group("key")] = val
                return
        if "Using network" in msg or "Using internal Network" in msg:
            m = _USING_NET.search(msg)
            if m:
                self.network = m.group("net").strip()
                return
        if "Assigned NET plugin" in msg:
            m = _ASSIGNED_NET.search(msg)
            if m:
                self.assigned_net = m.group("net").strip()
                return
        if "lugin" in msg:
            self._plugin(msg)
        if "NET/" in msg or "libibverbs" in msg:
            self._net_devices(msg)
        if "GPU Direct RDMA" in msg:
            if "GPU Direct RDMA Enabled for GPU" in msg:
                self.gdr_hint = True
            elif "GPU Direct RDMA Disabled for GPU" in msg and self.gdr_hint is None:
                self.gdr_hint = False
        if "Connected all rings" in msg:
            m = _RINGS_GDR.search(msg)
            if m:
                self.gdr_hint = m.group("g") != "0" or bool(self.gdr_hint)

    def _connection(self, msg: str) -> bool:
        m = _CONN.search(msg)
        if m:
            src, dst = int(m.group("src")), int(m.group("dst"))
        else:
            m = _COLLNET.search(msg)
            if not m:
                return False
            src, dst = int(m.group("src")), -1
        via = m.group("via").strip()
        cat, gdr = classify_via(via)
        self.transports[cat] += 1
        if gdr is not None and cat != "COLLNET":
            self.gdr_conn.append(gdr)
        if m.re is _CONN:
            self.conn_channels.add(int(m.group("ch")))
        key = (src, dst, cat)
        peer = self.peers.get(key)
        if peer is None:
            if len(self.peers) >= MAX_PEERS:
                self.loose["peers_truncated"] = True
                return True
            peer = self.peers[key] = {"from": src, "to": dst, "transport": cat, "via": via, "connections": 0}
        peer["connections"] += 1
        return True

    def _comm(self, m: re.Match, msg: str) -> None:
        ptr = m.group("ptr").lower()
        info = self.comms.setdefault(ptr, {"order": len(self.comms)})
        info["rank"], info["nranks"] = int(m.group("rank")), int(m.group("nranks"))
        rest = msg[m.end():]
        n = _NNODES.search(rest)
        if n:
            info["nnodes"] = int(n.group("n"))
        lr = _LOCALRANKS.search(rest)
        if lr:
            info["local_ranks"] = int(lr.group("n"))
        self.current = ptr

    def _comm_field(self, field: str, value: int, ptr: str | None = None) -> None:
        target = None
        if ptr:
            target = self.comms.setdefault(ptr.lower(), {"order": len(self.comms)})
        elif self.current is not None:
            target = self.comms.get(self.current)
        (target if target is not None else self.loose)[field] = value

    def _tuning(self, m: re.Match, msg: str) -> None:
        ch = _TUNING_CH.search(msg, m.end())
        channels = int(ch.group("hi")) - int(ch.group("lo")) + 1 if ch else None
        key = (m.group("op"), int(m.group("bytes")), _algo(m.group("algo")), _proto(m.group("proto")), channels)
        if key in self.tuning or len(self.tuning) < MAX_TUNING:
            self.tuning[key] = self.tuning.get(key, 0) + 1

    def _plugin(self, msg: str) -> None:
        m = _PLUGIN_LOADED.search(msg)
        if m:
            name = m.group("name").strip()
            if m.group("kind").lower() == "net":
                self.net_plugin = name
            else:
                self.collnet_plugin = name
            return
        m = _PLUGIN_PATH.search(msg)
        if m:
            self.net_plugin_path = m.group("path")
            return
        if _PLUGIN_NONE.search(msg) and self.net_plugin is None:
            self.net_plugin = "internal"

    def _net_devices(self, msg: str) -> None:
        m = _IB_USING.search(msg)
        if m:
            rest = m.group("rest")
            devs = [d.group("dev") for d in _DEV_TOKEN.finditer(rest.split("; OOB")[0])]
            if devs:
                self.ib_devices = devs
            oob = _OOB.search(rest)
            if oob:
                self.oob = oob.group("oob")
            return
        if _IB_NONE.search(msg):
            self.ib_no_device = True
            self.ib_note = self.ib_note or msg.strip()[:200]
            return
        m = _SOCKET_USING.search(msg)
        if m:
            devs = [d.group("dev") for d in _DEV_TOKEN.finditer(m.group("rest"))]
            if devs:
                self.socket_devices = devs
            return
        m = _OFI_PROVIDER.search(msg)
        if m:
            self.net_provider = m.group("p")

    # -- the summary ----------------------------------------------------------------------------------------
    def main_comm(self) -> dict:
        """The communicator with the most ranks (torch's world communicator, not its 2-rank p2p ones)."""
        comms = [c for c in self.comms.values() if "nranks" in c]
        if not comms:
            return {}
        return max(comms, key=lambda c: (c["nranks"], -c["order"]))

    def summary(self) -> dict:
        main = self.main_comm()
        channels = main.get("channels") or main.get("ring_channels") or self.loose.get("channels") \
            or self.loose.get("ring_channels")
        if channels is None:
            known = [c.get("channels") or c.get("ring_channels") for c in self.comms.values()]
            known = [k for k in known if k]
            channels = max(known) if known else (max(self.conn_channels) + 1 if self.conn_channels else None)
        transports = {k: 0 for k in TRANSPORT_KEYS}
        transports.update(self.transports)
        used = {k: n for k, n in transports.items() if not (k == "COLLNET" and self.collnet_failed)}
        if self.gdr_conn:
            # "used" only when every network connection of this rank used it: one host-staged connection is
            # a rank (and a path) without GPUDirect RDMA
            gdr: bool | None = all(self.gdr_conn)
        else:
            gdr = self.gdr_hint
        algo = proto = source = None
        tuning = [{"op": op, "bytes": b, "algo": a, "proto": p, "channels": c, "calls": n}
                  for (op, b, a, p, c), n in self.tuning.items()]
        if tuning:
            algo = _by_use((t["algo"], t["calls"]) for t in tuning)
            proto = _by_use((t["proto"], t["calls"]) for t in tuning)
            source = "tuning"
        elif self.best:
            algo = _by_use((a, n) for (a, _), n in self.best.items())
            proto = _by_use((p, n) for (_, p), n in self.best.items())
            source = "tuning"
        if algo is None and "NCCL_ALGO" in self.env:
            algo, source = _env_list(self.env["NCCL_ALGO"], _algo), "env"
        if proto is None and "NCCL_PROTO" in self.env:
            proto = _env_list(self.env["NCCL_PROTO"], _proto)
            source = source or "env"
        network = self.network or self.assigned_net
        out = {
            "rank": main.get("rank"), "host": self.host, "pid": self.pid, "device": self.dev,
            "nccl_version": self.version or self.version_code,
            "network": network, "net_class": _net_class(network) if network else None,
            "net_plugin": self.net_plugin, "net_plugin_path": self.net_plugin_path,
            "collnet_plugin": self.collnet_plugin, "net_provider": self.net_provider,
            "ib_devices": list(self.ib_devices), "ib_no_device": self.ib_no_device, "ib_note": self.ib_note,
            "oob_interface": self.oob,
            "socket_devices": list(self.socket_devices),
            "transports": transports, "transport": _transport_string(used), "gdr": gdr,
            "collnet_failed": self.collnet_failed,
            "channels": channels, "nvls_channels": main.get("nvls_channels", self.loose.get("nvls_channels")),
            "p2p_channels": main.get("p2p_channels", self.loose.get("p2p_channels")),
            "algo": algo, "proto": proto, "algo_source": source,
            "nranks": main.get("nranks"), "nnodes": main.get("nnodes"), "local_ranks": main.get("local_ranks"),
            "communicators": len(self.comms),
            "comms": [{k: c.get(k) for k in ("rank", "nranks", "nnodes", "local_ranks", "channels", "ring_channels")}
                      for c in sorted(self.comms.values(), key=lambda c: c["order"])[:64]],
            "peers": sorted(self.peers.values(), key=lambda p: (p["from"], p["to"], p["transport"])),
            "tuning": tuning, "env": dict(sorted(self.env.items())), "warnings": list(self.warnings),
            "lines": self.lines,
        }
        if self.loose.get("peers_truncated"):
            out["peers_truncated"] = True
        return out


def _by_use(pairs: Iterable[tuple[str, int]]) -> str:
    """Distinct values, most used first, joined with ','."""
    counts: Counter = Counter()
    for value, n in pairs:
        counts[value] += n
    return ",".join(v for v, _ in counts.most_common())


def _split(line: str) -> tuple[str | None, str, re.Match | None]:
    """(level, message, origin match) of one line."""
    if len(line) > MAX_LINE:
        line = line[:MAX_LINE]
    lv = _LEVEL.search(line)
    if lv:
        return lv.group("level"), line[lv.end():].strip(), _ORIGIN.search(line, 0, lv.start())
    return None, line.strip(), _ORIGIN.search(line)


def _lines(text) -> Iterable[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if isinstance(text, str):
        return text.splitlines()
    return (t if isinstance(t, str) else str(t) for t in text)


def _feed_line(acc: _Acc, level: str | None, msg: str) -> None:
    try:
        acc.feed(msg, level)
    except (ValueError, IndexError, OverflowError):  # pragma: no cover - defensive: read on
        pass


def _global_fields(acc: _Acc, msg: str) -> None:
    """Lines that are not NCCL's own but name its version (nccl-tests headers)."""
    m = _LIBCODE.search(msg)
    if m and acc.version_code is None:
        try:
            acc.version_code = _version_from_code(int(m.group("code")))
        except ValueError:  # pragma: no cover
            pass


def summarize(text, rank: int | None = None, host: str | None = None) -> dict:
    """Read the whole text as one rank's log (e.g. its NCCL_DEBUG_FILE). `rank`/`host` override what the
    log says (fabricbench's own rank is the one that matters)."""
    acc = _Acc()
    for line in _lines(text):
        level, msg, origin = _split(line)
        if origin is not None and acc.host is None:
            acc.host, acc.pid, acc.dev = origin.group("host"), int(origin.group("pid")), int(origin.group("dev"))
        _global_fields(acc, msg)
        _feed_line(acc, level, msg)
    out = acc.summary()
    if rank is not None:
        if out["rank"] is not None and out["rank"] != rank:
            out["nccl_rank"] = out["rank"]
        out["rank"] = rank
    if host is not None:
        out["host"] = host
    return out


_PROCESS_FIELDS = ("version", "version_code", "network", "assigned_net", "net_plugin", "net_plugin_path",
                   "collnet_plugin", "net_provider", "oob", "ib_note")


def summarize_by_rank(text) -> list[dict]:
    """A mixed log (several processes, several GPUs per process): one summary per (host, pid, device).

    Lines without a `host:pid:tid [dev]` origin feed every group's version/network when those are missing,
    and form the only group when no line has an origin. NCCL prints some facts once per process (version,
    plugin, devices): devices of the same process inherit them."""
    groups: dict[tuple, _Acc] = {}
    loose = _Acc()
    for line in _lines(text):
        level, msg, origin = _split(line)
        if origin is None:
            _global_fields(loose, msg)
            _feed_line(loose, level, msg)
            continue
        key = (origin.group("host"), int(origin.group("pid")), int(origin.group("dev")))
        acc = groups.get(key)
        if acc is None:
            acc = groups[key] = _Acc()
            acc.host, acc.pid, acc.dev = key
        _feed_line(acc, level, msg)
    if not groups:
        return [loose.summary()] if loose.lines else []
    by_process: dict[tuple, list[_Acc]] = {}
    for (host, pid, _), acc in groups.items():
        by_process.setdefault((host, pid), []).append(acc)
    for accs in by_process.values():
        for field in _PROCESS_FIELDS:
            value = next((getattr(a, field) for a in accs if getattr(a, field)), None) or getattr(loose, field)
            for a in accs:
                if not getattr(a, field):
                    setattr(a, field, value)
        for field in ("ib_devices", "socket_devices"):
            value = next((getattr(a, field) for a in accs if getattr(a, field)), None) or getattr(loose, field)
            for a in accs:
                if not getattr(a, field):
                    setattr(a, field, list(value))
        no_dev = any(a.ib_no_device for a in accs) or loose.ib_no_device
        collnet_failed = any(a.collnet_failed for a in accs) or loose.collnet_failed
        env: dict = dict(loose.env)
        for a in accs:
            env.update(a.env)
        for a in accs:
            a.ib_no_device = a.ib_no_device or no_dev
            a.collnet_failed = a.collnet_failed or collnet_failed
            a.env = {**env, **a.env}
    # one job, one library: a version printed by one process names it for all (unless they disagree)
    versions = {a.version for a in groups.values() if a.version}
    if len(versions) == 1:
        for a in groups.values():
            a.version = a.version or next(iter(versions))
    summaries = [a.summary() for a in groups.values()]
    # devices that only ran proxy threads or printed nothing rank-specific are not ranks of their own
    ranked = [s for s in summaries if s["rank"] is not None]
    if ranked:
        summaries = ranked
    summaries.sort(key=lambda s: (s["rank"] is None, s["rank"] if s["rank"] is not None else 0,
                                  s["host"] or "", s["pid"] or 0, s["device"] or 0))
    return summaries


def parse_file(path: str | os.PathLike, rank: int | None = None, host: str | None = None) -> dict | None:
    """Summarize one rank's log file; None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return summarize(handle, rank=rank, host=host)
    except OSError:
        return None


# -- judgement -------------------------------------------------------------------------------------------------
def _rank_socket_reason(s: Mapping, nnodes: int | None) -> str | None:
    transports = s.get("transports") or {}
    n_socket = int(transports.get("NET/Socket") or 0)
    n_fabric = sum(int(n or 0) for k, n in transports.items()
                   if k.startswith("NET/") and k != "NET/Socket") + int(transports.get("COLLNET") or 0)
    nn = nnodes if nnodes is not None else s.get("nnodes")
    multi = nn is None or nn > 1
    ib_present = bool(s.get("ib_devices"))
    network_socket = (s.get("net_class") or (_net_class(s["network"]) if s.get("network") else None)) == "Socket"
    if n_socket and (multi or ib_present):
        return f"{n_socket} connection{'s' if n_socket != 1 else ''} via NET/Socket"
    if network_socket and not n_fabric and ((nn is not None and nn > 1) or ib_present):
        return "NCCL chose the Socket network" + (" for a multi-node communicator" if nn and nn > 1 else "")
    return None


def socket_fallback(summary: Mapping | None, nnodes: int | None = None) -> str | None:
    """One warning line when traffic went over TCP sockets (NET/Socket) where a fabric was expected:
    multi-node connections via NET/Socket, or the Socket network chosen although IB devices were found.
    `summary` is one rank's summary or the `combine` record; `nnodes` overrides what NCCL said."""
    if not isinstance(summary, Mapping):
        return None
    per_rank = summary.get("per_rank") if isinstance(summary.get("per_rank"), list) else [summary]
    if nnodes is None and "per_rank" in summary:
        nnodes = summary.get("nnodes") if isinstance(summary.get("nnodes"), int) else None
    hits: list[tuple] = []
    for s in per_rank:
        if not isinstance(s, Mapping):
            continue
        try:
            reason = _rank_socket_reason(s, nnodes)
        except (TypeError, ValueError, AttributeError):
            reason = None
        if reason:
            hits.append((s.get("rank"), reason, s))
    if not hits:
        return None
    first = hits[0][2]
    who = _rank_list([h[0] for h in hits if isinstance(h[0], int)])
    details = [hits[0][1]]
    ib = first.get("ib_devices") or []
    env = first.get("env") or {}
    if ib:
        details.append(f"IB devices were found ({', '.join(ib[:4])}{', ...' if len(ib) > 4 else ''}) but not used")
    elif first.get("ib_no_device"):
        details.append(f"IB unavailable ({first.get('ib_note') or 'NET/IB found no device'})")
    for key in ("NCCL_IB_DISABLE", "NCCL_NET", "NCCL_IB_HCA"):
        if key in env:
            details.append(f"{key}={env[key]}")
    if first.get("socket_devices"):
        details.append(f"socket interface {', '.join(first['socket_devices'][:2])}")
    where = f" on rank{'s' if len(hits) > 1 else ''} {who}" if who else ""
    return (f"NCCL fell back to TCP sockets{where}: {'; '.join(details)}. The bandwidth measured is the TCP "
            "path, not the fabric: check NCCL_IB_DISABLE/NCCL_NET, the RDMA driver and libibverbs, and the net "
            "plugin before blaming the fabric (NCCL's log: logs/nccl-rank*.log)")


def _rank_list(ranks: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    ranks = sorted(set(ranks))
    out, i = [], 0
    while i < len(ranks):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] == ranks[j] + 1:
            j += 1
        out.append(f"{ranks[i]}-{ranks[j]}" if j > i else f"{ranks[i]}")
        i = j + 1
    return ",".join(out)


def _common(values: list) -> object:
    present = [v for v in values if v not in (None, "", [])]
    if not present:
        return None
    first = present[0]
    return first if all(v == first for v in present) else None


def combine(per_rank: list[dict | None], nnodes: int | None = None, complete: bool = True) -> dict:
    """The run-level record: every rank's summary plus what they agree on, the union of transports, the
    warnings (each once, with the ranks that printed it) and the socket fall-back verdict."""
    ranks = [s for s in per_rank if isinstance(s, Mapping)]
    ranks.sort(key=lambda s: (s.get("rank") is None, s.get("rank") or 0))
    totals: Counter = Counter()
    for s in ranks:
        for k, n in (s.get("transports") or {}).items():
            totals[k] += int(n or 0)
    transports = {k: 0 for k in TRANSPORT_KEYS}
    transports.update(totals)
    used: Counter = Counter()
    for s in ranks:
        for k in str(s.get("transport") or "").split("+"):
            if k:
                used[k] += 1
    warn_ranks: dict[str, list] = {}
    for s in ranks:
        for w in s.get("warnings") or []:
            warn_ranks.setdefault(w, []).append(s.get("rank"))
    warnings = [f"{w} (rank{'s' if len(r) > 1 else ''} {_rank_list([x for x in r if isinstance(x, int)])})"
                if any(isinstance(x, int) for x in r) else w for w, r in warn_ranks.items()]
    gdrs = [s.get("gdr") for s in ranks if s.get("gdr") is not None]
    channels = [s.get("channels") for s in ranks if isinstance(s.get("channels"), int)]
    versions = sorted({s["nccl_version"] for s in ranks if s.get("nccl_version")})
    tuned = next((s for s in ranks if s.get("algo_source") == "tuning"), None)
    with_algo = tuned or next((s for s in ranks if s.get("algo")), {})
    nn = nnodes if nnodes is not None else _common([s.get("nnodes") for s in ranks])
    record = {
        "nccl_version": versions[0] if len(versions) == 1 else (versions or None),
        "network": _common([s.get("network") for s in ranks]),
        "net_plugin": _common([s.get("net_plugin") for s in ranks]),
        "transport": _transport_string(used),
        "transports": transports,
        "collnet_failed": any(bool(s.get("collnet_failed")) for s in ranks),
        "gdr": (all(gdrs) if gdrs else None),
        "channels": channels[0] if channels and len(set(channels)) == 1 else None,
        "channels_range": [min(channels), max(channels)] if channels else None,
        "algo": with_algo.get("algo"), "proto": with_algo.get("proto"),
        "algo_source": with_algo.get("algo_source"),
        "nranks": len(ranks), "nnodes": nn, "complete": bool(complete),
        "warnings": warnings,
        "per_rank": ranks,
    }
    fallback = socket_fallback(record, nnodes=nn)
    record["socket_fallback"] = fallback
    if fallback:
        record["warnings"] = [fallback, *warnings]
    return record


def note_line(record: Mapping) -> str:
    """The one-line '# NCCL: ...' note for the terminal."""
    parts = []
    version = record.get("nccl_version")
    if version:
        parts.append(version if isinstance(version, str) else "versions " + "/".join(map(str, version)))
    if record.get("network"):
        plugin = record.get("net_plugin")
        if isinstance(plugin, str):
            plugin = re.sub(r"\s*\((v\d+)\)$", lambda m: "" if m.group(1) in plugin[:m.start()] else m.group(0),
                            plugin)
        via = f" (plugin {plugin})" if plugin and plugin != "internal" else ""
        parts.append(f"network {record['network']}{via}")
    parts.append(f"transport {record.get('transport') or 'not reported'}")
    if record.get("collnet_failed"):
        parts.append("CollNet failed to start")
    gdr = record.get("gdr")
    if gdr is not None:
        parts.append(f"GPUDirect RDMA {'yes' if gdr else 'NO'}")
    if record.get("channels"):
        parts.append(f"{record['channels']} channels")
    elif record.get("channels_range"):
        lo, hi = record["channels_range"]
        parts.append(f"{lo}-{hi} channels")
    if record.get("algo"):
        how = " (forced by NCCL_ALGO)" if record.get("algo_source") == "env" else ""
        parts.append(f"algo {record['algo']}{how}")
    if record.get("proto"):
        parts.append(f"proto {record['proto']}")
    if not record.get("complete", True):
        parts.append(f"from {record.get('nranks', 0)} rank log(s) only")
    return "NCCL: " + ", ".join(parts)


# -- capture around a run ------------------------------------------------------------------------------------
def rank_log_path(out_dir: str | os.PathLike, rank: int) -> Path:
    return Path(out_dir) / LOG_DIR / f"nccl-rank{rank}.log"


def _short_host() -> str:
    return socket.gethostname().split(".")[0]


def expand_debug_file(pattern: str, host: str | None = None, pid: int | None = None) -> Path:
    """NCCL's expansion of NCCL_DEBUG_FILE: %h hostname (up to the first '.'), %p pid, %% a '%'."""
    host = host if host is not None else _short_host()
    pid = pid if pid is not None else os.getpid()
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c != "%" or i + 1 >= len(pattern):
            out.append(c)
            i += 1
            continue
        nxt = pattern[i + 1]
        out.append({"%": "%", "h": host, "p": str(pid)}.get(nxt, "%" + nxt))
        i += 2
    return Path("".join(out))


def prepare_debug_env(env: MutableMapping[str, str], out_dir: str | os.PathLike | None, rank: int) -> Path | None:
    """Before NCCL starts (it reads these once): unless the user set NCCL_DEBUG, turn on INFO output for the
    subsystems that say what NCCL chose, into this rank's own file. Returns the file to read after the run
    (the user's own NCCL_DEBUG_FILE when they asked for INFO into a file), or None when nothing is captured."""
    if env.get("NCCL_DEBUG"):
        user_file = env.get("NCCL_DEBUG_FILE")
        if user_file and env["NCCL_DEBUG"].strip().upper() in ("INFO", "TRACE"):
            return expand_debug_file(user_file)
        return None
    if not out_dir:
        return None
    path = rank_log_path(out_dir, rank).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    env["NCCL_DEBUG"] = "INFO"
    env["NCCL_DEBUG_SUBSYS"] = DEBUG_SUBSYS
    env["NCCL_DEBUG_FILE"] = str(path).replace("%", "%%")
    return path


def parse_rank_log(path: Path | None, rank: int, host: str | None = None) -> dict | None:
    """This rank's summary (None when there is no log to read)."""
    if path is None:
        return None
    summary = parse_file(path, rank=rank, host=host)
    if summary is not None:
        summary["log"] = str(path)
    return summary


def local_summaries(out_dir: str | os.PathLike, skip: Iterable[int] = ()) -> list[dict]:
    """Summaries of the per-rank logs found in `<out_dir>/logs` (all ranks of a local run write there): the
    fall-back when the ranks cannot gather their summaries after a failure."""
    skip = set(skip)
    found = []
    for path in sorted(Path(out_dir, LOG_DIR).glob("nccl-rank*.log")):
        try:
            rank = int(path.stem.removeprefix("nccl-rank"))
        except ValueError:
            continue
        if rank in skip:
            continue
        summary = parse_rank_log(path, rank)
        if summary is not None:
            found.append(summary)
    return found


def _collapse_env(record: dict) -> None:
    """run.json keeps one `env` when every rank saw the same variables; the per-rank NCCL_DEBUG_FILE that
    fabricbench set would split it into `env_per_rank`. Undo that (the file names are under "nccl")."""
    envs = record.get("env_per_rank")
    if record.get("env") is not None or not isinstance(envs, list) or not envs:
        return
    if not all(isinstance(e, dict) for e in envs):
        return
    stripped = [{k: v for k, v in e.items() if k != "NCCL_DEBUG_FILE"} for e in envs]
    if all(e == stripped[0] for e in stripped) and all("NCCL_DEBUG_FILE" in e for e in envs):
        record["env"] = {**stripped[0], "NCCL_DEBUG_FILE": f"{LOG_DIR}/nccl-rank<N>.log (per rank)"}
        record["env_per_rank"] = None


def merge_into_run_json(out_dir: str | os.PathLike, per_rank: list[dict | None], complete: bool = True,
                        set_by_fabricbench: bool = True) -> dict | None:
    """Rank 0, after the driver wrote run.json: add the "nccl" record (and return it). The number of nodes
    comes from run.json's hosts when it has them."""
    from fabricbench.results.io import RUN_FILE, atomic_write_json

    path = Path(out_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            record = {}
    except (OSError, ValueError):
        record = {}
    hosts = record.get("hosts")
    nnodes = len(hosts) if isinstance(hosts, list) and hosts else None
    nccl = combine(per_rank, nnodes=nnodes, complete=complete)
    nccl["debug_env"] = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": DEBUG_SUBSYS,
                         "NCCL_DEBUG_FILE": f"{LOG_DIR}/nccl-rank<N>.log"} if set_by_fabricbench else None
    record["nccl"] = nccl
    if set_by_fabricbench:
        _collapse_env(record)
    try:
        atomic_write_json(path, record)
    except OSError:
        pass
    return nccl
