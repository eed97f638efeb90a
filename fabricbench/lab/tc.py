"""Link shaping with `tc`: parse rates/delays/losses, and render one interface's whole qdisc tree.

Every shaped interface gets the same tree, rebuilt from scratch whenever its desired state changes (so `heal`
and repeated `degrade` never have to patch a half-known tree):

    root 1: htb default 10
      class 1:1   rate R          the interface (link rate, or a NIC degradation's rate)
        class 1:10  rate R        all traffic not matched below       [+ netem 10: delay of the NIC]
        class 1:1NN rate r        traffic to one destination address  [+ netem 1NN: delay of that pair]
    filter u32 match ip dst B/32 -> 1:1NN

    class 1:9   8kbit + pfifo limit 0   the drop class: loss filters (classic BPF, prio 1) send packets here
An unshaped interface (an uplink) gets the same tree with a 100 Gbit/s ceiling when it is degraded.
Rates are decimal bits per second, as tc's `mbit`/`gbit`. Delay uses netem, loss does not (see loss_bytecode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fabricbench.errors import UsageError

_RATE_UNITS = {"": 1, "bit": 1, "k": 10**3, "kbit": 10**3, "m": 10**6, "mbit": 10**6, "g": 10**9, "gbit": 10**9,
               "t": 10**12, "tbit": 10**12, "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9}
_TIME_UNITS = {"us": 1, "usec": 1, "ms": 1000, "msec": 1000, "s": 10**6, "sec": 10**6}
UNLIMITED = ("none", "unlimited", "off", "0")


def parse_rate(text: str, option: str = "--rate", relative_to: int | None = None) -> int | None:
    """'400mbit', '1gbit', '400M', '2.5g', '50%' (of `relative_to`) -> bits/s; 'none'/'unlimited'/'0' -> None.

    Note the tc convention: 'mbit' is megabits, 'mbps' megabytes per second."""
    raw = str(text).strip().lower()
    if raw in UNLIMITED:
        return None
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%|[a-z]*)", raw)
    if not match:
        raise UsageError(f"{option} '{text}': not a rate; write e.g. 400mbit, 1gbit, or 60% of the link rate")
    value, unit = float(match.group(1)), match.group(2)
    if unit == "%":
        if relative_to is None:
            raise UsageError(f"{option} '{text}': a percentage needs a shaped link to be relative to; give an "
                             "absolute rate such as 200mbit")
        if not 0 < value <= 100:
            raise UsageError(f"{option} '{text}': a percentage must be in (0, 100]")
        bps = relative_to * value / 100
    else:
        if unit not in _RATE_UNITS:
            raise UsageError(f"{option} '{text}': unknown unit '{unit}'; use bit, kbit, mbit, gbit (or k/m/g)")
        bps = value * _RATE_UNITS[unit]
    if bps < 8000:
        raise UsageError(f"{option} '{text}': below 8kbit, tc cannot shape that reliably")
    return int(bps)


def parse_delay(text: str | None, option: str = "--delay") -> int | None:
    """'10ms', '500us', '0.2s', '5' (ms) -> microseconds; None or '0' -> None."""
    if text is None:
        return None
    raw = str(text).strip().lower()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-z]*)", raw)
    if not match or match.group(2) not in {**_TIME_UNITS, "": 0}:
        raise UsageError(f"{option} '{text}': not a delay; write e.g. 10ms, 500us or 0.2s")
    usec = float(match.group(1)) * _TIME_UNITS.get(match.group(2) or "ms", 1000)
    if usec > 60 * 10**6:
        raise UsageError(f"{option} '{text}': more than 60 s of delay is not a fabric, it is an outage")
    return int(usec) or None


def parse_loss(text: str | None, option: str = "--loss") -> float | None:
    """'1%', '0.5%', '1' (percent) -> percent; None or '0' -> None."""
    if text is None:
        return None
    raw = str(text).strip().rstrip("%").strip()
    try:
        pct = float(raw)
    except ValueError:
        raise UsageError(f"{option} '{text}': not a loss; write a percentage such as 1% or 0.1%") from None
    if not 0 <= pct <= 100:
        raise UsageError(f"{option} '{text}': loss must be between 0% and 100%")
    return pct or None


def format_rate(bps: int | None) -> str:
    if bps is None:
        return "unlimited"
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale:
            return f"{bps / scale:.4g}{unit}"
    return f"{bps}bit"


def format_delay(usec: int | None) -> str:
    if not usec:
        return "-"
    return f"{usec / 1000:g}ms" if usec >= 1000 else f"{usec}us"


@dataclass
class Shape:
    """What one direction of a link should do: rate limit (None = unshaped), extra delay, loss."""

    rate_bps: int | None = None
    delay_us: int | None = None
    loss_pct: float | None = None

    def as_dict(self) -> dict:
        return {"rate_bps": self.rate_bps, "delay_us": self.delay_us, "loss_pct": self.loss_pct}


@dataclass
class IfaceSpec:
    """An egress interface's desired shaping: the interface as a whole, plus per-destination classes."""

    base: Shape = field(default_factory=Shape)
    per_dst: dict[str, Shape] = field(default_factory=dict)  # destination IPv4 address -> its shape

    def empty(self) -> bool:
        return not (self.base.rate_bps or self.base.delay_us or self.base.loss_pct or self.per_dst)


def _combine(base: Shape, extra: Shape) -> Shape:
    """A pair's class: the tighter rate, and the NIC's delay plus the pair's (loss is filtered separately)."""
    rate = min((r for r in (base.rate_bps, extra.rate_bps) if r), default=None)
    delay = (base.delay_us or 0) + (extra.delay_us or 0) or None
    return Shape(rate, delay, extra.loss_pct)


# Loss without netem (some kernels, like this project's CI VMs, lack CONFIG_NET_SCH_NETEM): a classic-BPF
# filter (cls_bpf) draws a random number per packet (SKF_AD_RANDOM) and sends the unlucky ones to class 1:9,
# whose pfifo holds 0 packets, so they are dropped. For a pair the filter first compares the IPv4 destination
# (loaded at SKF_NET_OFF + 16).
DROP_CLASS = "1:9"
_DROP_CLASSID = 0x10009
_SKF_AD_RANDOM = (1 << 32) - 0x1000 + 56
_SKF_NET_DST = (1 << 32) - 0x100000 + 16
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06


def loss_bytecode(loss_pct: float, dst: str | None = None) -> str:
    """cBPF bytecode for `tc filter ... bpf bytecode`: classify into the drop class with probability loss."""
    import ipaddress

    threshold = min((1 << 32) - 1, int(loss_pct / 100 * (1 << 32)))
    prog = []
    if dst is not None:
        prog += [(_LD_W_ABS, 0, 0, _SKF_NET_DST), (_JEQ_K, 0, 3, int(ipaddress.IPv4Address(dst)))]
    prog += [(_LD_W_ABS, 0, 0, _SKF_AD_RANDOM), (_JGE_K, 1, 0, threshold), (_RET_K, 0, 0, _DROP_CLASSID),
             (_RET_K, 0, 0, 0)]
    return f"{len(prog)}," + ",".join(f"{c} {jt} {jf} {k}" for c, jt, jf, k in prog)


def _burst(bps: int) -> str:
    # tc's default HTB burst (one MTU) is too small for a busy 2-core host: 2 ms worth of bytes keeps the
    # average at the set rate without letting a burst exceed it by much.
    return str(max(15140, bps // 8 // 500))


def _htb(bps: int) -> list[str]:
    return ["htb", "rate", f"{bps}bit", "ceil", f"{bps}bit", "burst", _burst(bps), "cburst", _burst(bps),
            "quantum", _quantum(bps)]


def _quantum(bps: int) -> str:
    # HTB warns when rate/r2q is outside [1000, 200000] bytes; a fixed quantum keeps it quiet and fair enough.
    return str(max(1514, min(200000, bps // 8 // 10)))


def netem_available(netns_name: str) -> bool:
    """Whether this kernel has netem (CONFIG_NET_SCH_NETEM): try it on a lab namespace's loopback."""
    import subprocess

    base = ["tc", "-n", netns_name, "qdisc"]
    ok = subprocess.run(base + ["add", "dev", "lo", "root", "handle", "1:", "netem", "delay", "1us"],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(base + ["del", "dev", "lo", "root"], capture_output=True)
    return ok


def render(spec: IfaceSpec) -> list[list[str]]:
    """tc argument lists that build the tree ('DEV' stands for the device); [] = leave the default qdisc.

    Delay needs netem (refused earlier where the kernel has none); rate and loss need only htb, cls_u32 and
    cls_bpf."""
    if spec.empty():
        return []
    base = spec.base
    top = base.rate_bps or 100 * 10**9  # an unshaped interface still needs a ceiling for HTB
    cmds = [["qdisc", "add", "dev", "DEV", "root", "handle", "1:", "htb", "default", "10"],
            ["class", "add", "dev", "DEV", "parent", "1:", "classid", "1:1", *_htb(top)],
            ["class", "add", "dev", "DEV", "parent", "1:1", "classid", "1:10", *_htb(top)]]
    if base.delay_us:
        cmds.append(_netem("1:10", "10:", base.delay_us))
    losses = [(None, base.loss_pct)] if base.loss_pct else []
    for index, (dst, extra) in enumerate(sorted(spec.per_dst.items())):
        shape = _combine(base, extra)
        rate = shape.rate_bps or top
        minor = 100 + index
        cmds.append(["class", "add", "dev", "DEV", "parent", "1:1", "classid", f"1:{minor}", *_htb(rate)])
        if shape.delay_us:
            cmds.append(_netem(f"1:{minor}", f"{minor}:", shape.delay_us))
        cmds.append(["filter", "add", "dev", "DEV", "parent", "1:", "protocol", "ip", "prio", "2", "u32", "match",
                     "ip", "dst", f"{dst}/32", "flowid", f"1:{minor}"])
        if extra.loss_pct:
            losses.append((dst, extra.loss_pct))
    if losses:
        cmds += [["class", "add", "dev", "DEV", "parent", "1:", "classid", DROP_CLASS, *_htb(8000)],
                 ["qdisc", "add", "dev", "DEV", "parent", DROP_CLASS, "handle", "9:", "pfifo", "limit", "0"]]
        for dst, pct in losses:  # prio 1: dropped before any class is chosen
            cmds.append(["filter", "add", "dev", "DEV", "parent", "1:", "protocol", "ip", "prio", "1", "bpf",
                         "bytecode", f"'{loss_bytecode(pct, dst)}'"])
    return cmds


def _netem(parent: str, handle: str, delay_us: int) -> list[str]:
    return ["qdisc", "add", "dev", "DEV", "parent", parent, "handle", handle, "netem", "limit", "100000",
            "delay", f"{delay_us}us"]


def commands_for(dev: str, spec: IfaceSpec) -> list[list[str]]:
    """The tc argv lists that replace whatever `dev` has with `spec` (first one deletes the old root)."""
    out = []
    for cmd in render(spec):
        out.append(["tc", *[dev if part == "DEV" else part for part in cmd]])
    return out
