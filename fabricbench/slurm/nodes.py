"""Slurm node primitives for draining and resuming one node at a time, safely.

Every node name is checked to be one plain name (Slurm expands `lab[1-4]`, `lab3,lab4` and `lab3 lab4` into
several nodes), then looked up with `scontrol show node NAME` (one exact NodeName, or nothing). A reason is
ours only when it starts with OWNED_PREFIX exactly, as read from Slurm's structured output; LBNL NHC does the
same with its `NHC:` prefix (helpers/node-mark-online). `drain`/`resume` re-read the node right before each
update and skip on any doubt: a reason someone else wrote is never overwritten, and a node we did not drain is
never resumed. Slurm has no compare-and-set, so a person writing a reason in the instant between our read and
our update can still be overwritten; the window is one scontrol round trip.

Printed commands are shell-quoted: piping them to `sh` runs exactly one scontrol per node.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field

from fabricbench.errors import UsageError

# "{auto}" is the marker people do not type: a reason a person writes by hand starting with "fabricbench:"
# is not ours and is never overwritten or resumed (docs/security.md).
OWNED_PREFIX = "fabricbench:{auto}"

# One Slurm node name: letters, digits, '-', '_', '.'; starting with a letter or digit (not an option).
# Anything else (brackets, commas, spaces, quotes, '$', ';' ...) would be a host list or reach a shell.
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
MAX_REASON = 200
_TIMEOUT_S = 30
# Node states in which a reason means someone took the node out of service.
_OUT_OF_SERVICE = {"DRAIN", "DRAINED", "DRAINING", "DOWN", "FAIL", "FAILING", "MAINT", "REBOOT_REQUESTED",
                   "REBOOT_ISSUED", "POWER_DOWN", "POWERED_DOWN", "POWERING_DOWN", "FUTURE", "INVALID_REG",
                   "INVALID", "UNKNOWN", "NO_RESPOND", "NOT_RESPONDING"}


def printable(text: object, limit: int = 200) -> str:
    """`text` safe for a one-line '# comment': control characters escaped, so it can never start a shell line."""
    s = str(text)
    s = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in s)
    return s if len(s) <= limit else s[:limit] + "..."


def validate_node_name(name: object) -> str:
    """Return `name` if it is one plain Slurm node name; UsageError otherwise (never a host list)."""
    if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
        raise UsageError(f"node name {printable(name)!r} is not one plain node name (letters, digits, '.', '_', "
                         "'-'; no host lists like lab[1-4] or lab3,lab4, no spaces or shell characters)")
    return name


@dataclass(frozen=True)
class NodeInfo:
    name: str
    states: frozenset = field(default_factory=frozenset)  # e.g. {"IDLE", "DRAIN"}
    reason: str = ""  # "" when none
    reason_user: str = ""
    raw: str = field(default="", compare=False)  # what scontrol printed (one line or the JSON object)

    @property
    def out_of_service(self) -> bool:
        return bool(self.states & _OUT_OF_SERVICE)


def owned(reason: object) -> bool:
    """True only for a reason that starts with OWNED_PREFIX exactly (no leading space, no 'word=' before it)."""
    return isinstance(reason, str) and reason.startswith(OWNED_PREFIX)


def _scontrol(scontrol: str | None) -> str:
    path = scontrol or shutil.which("scontrol")
    if not path:
        raise UsageError("scontrol is not on PATH: cannot read node states (install slurm-client or set PATH)")
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, errors="replace")
    except subprocess.TimeoutExpired:
        raise UsageError(f"{shell_line(argv)}: no answer in {_TIMEOUT_S} s (is slurmctld up?)") from None
    except OSError as err:
        raise UsageError(f"{shell_line(argv)}: {err.strerror or err}") from None


_REASON_TAIL = re.compile(r" \[([^\[\]@ ]*)@(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|Unknown|None)\]")


def parse_oneliner(line: str) -> NodeInfo | None:
    """One line of `scontrol show node -o`; None when it is not a node record we can read without doubt.

    The reason is the text after the single ' Reason=' up to its '[user@time]' stamp; a line with two
    'Reason=' (a reason or comment that contains one) is doubtful and returns None."""
    m = re.match(r"NodeName=(\S+) ", line)
    if not m:
        return None
    state = re.search(r" State=(\S+)", line)
    if not state:
        return None
    states = frozenset(s for s in state.group(1).upper().split("+") if s)
    hits = [h.start() for h in re.finditer(r"(?:^| )Reason=", line)]
    if len(hits) > 1:
        return None
    reason, user = "", ""
    if hits:
        rest = line[hits[0]:].lstrip(" ")[len("Reason="):]
        stamps = list(_REASON_TAIL.finditer(rest))
        if not stamps:
            return None
        reason, user = rest[:stamps[0].start()], stamps[0].group(1)
    return NodeInfo(name=m.group(1), states=states, reason=reason, reason_user=user, raw=line)


def _from_json(node: dict) -> NodeInfo | None:
    name, reason = node.get("name"), node.get("reason", "")
    state = node.get("state", [])
    if isinstance(state, str):
        state = [state]
    if not isinstance(name, str) or not isinstance(reason, str) or not isinstance(state, list):
        return None
    states = frozenset(str(s).upper() for s in state) | frozenset(str(s).upper() for s in node.get("state_flags", []) or [])
    user = node.get("reason_set_by_user", "")
    return NodeInfo(name=name, states=states, reason=reason, reason_user=user if isinstance(user, str) else "",
                    raw=json.dumps(node, sort_keys=True))


_json_supported: dict[str, bool] = {}


def node_info(name: str, scontrol: str | None = None) -> NodeInfo | None:
    """The one node named exactly `name`, read from `scontrol --json show node NAME` where this Slurm has it
    (23.02+), else `scontrol show node -o NAME`; None when Slurm does not list exactly one such node or its
    record cannot be read without doubt."""
    validate_node_name(name)
    exe = _scontrol(scontrol)
    if _json_supported.get(exe) is not False:
        proc = _run([exe, "--json", "show", "node", name])
        if proc.returncode == 0:
            _json_supported[exe] = True
            try:
                data = json.loads(proc.stdout)
                nodes = [n for n in data.get("nodes", []) if isinstance(n, dict) and n.get("name") == name]
            except (ValueError, AttributeError, TypeError):
                return None
            return _from_json(nodes[0]) if len(nodes) == 1 else None
        if _json_supported.get(exe):  # this scontrol speaks JSON: a failure means no such node
            return None
        _json_supported[exe] = False  # older Slurm (22.05: "unrecognized option '--json'"): the one-line form
    proc = _run([exe, "show", "node", "-o", name])
    if proc.returncode != 0:
        return None
    found = [info for line in proc.stdout.splitlines() if line.strip()
             for info in [parse_oneliner(line)] if info is not None and info.name == name]
    named = [line for line in proc.stdout.splitlines() if line.startswith(f"NodeName={name} ")]
    if len(found) != 1 or len(named) != 1:
        return None
    return found[0]


def _check_reason(reason: str) -> str:
    if not owned(reason):
        raise UsageError(f"drain reason must start with {OWNED_PREFIX!r}")
    if len(reason) > MAX_REASON or not reason.isprintable() or "Reason=" in reason[len(OWNED_PREFIX):]:
        raise UsageError(f"drain reason {printable(reason)!r}: printable, at most {MAX_REASON} characters")
    return reason


def drain_argv(node: str, reason: str) -> list[str]:
    return ["scontrol", "update", f"NodeName={validate_node_name(node)}", "State=DRAIN", f"Reason={_check_reason(reason)}"]


def resume_argv(node: str) -> list[str]:
    return ["scontrol", "update", f"NodeName={validate_node_name(node)}", "State=RESUME"]


def shell_line(argv: list[str]) -> str:
    """One shell command line that runs exactly `argv` (every word shlex-quoted)."""
    return " ".join(shlex.quote(str(a)) for a in argv)


@dataclass(frozen=True)
class Outcome:
    node: str
    action: str  # drained | would-drain | resumed | would-resume | skipped | failed
    why: str
    argv: tuple = ()

    @property
    def changed(self) -> bool:
        return self.action in ("drained", "resumed")


def _drain_doubt(info: NodeInfo | None, node: str) -> str | None:
    """Why `node` must not be drained now, or None."""
    if info is None:
        return "Slurm does not list exactly one node with this name (scontrol show node)"
    if info.reason and not owned(info.reason):
        return f"has a reason set by someone else ({printable(info.reason, 80)}); not overwritten"
    if owned(info.reason) and info.states & {"DRAIN", "DRAINED", "DRAINING"}:
        return "already drained by fabricbench"
    if info.out_of_service and not owned(info.reason):
        return f"is {'+'.join(sorted(info.states))} without a fabricbench reason; left alone"
    return None


def _comment(echo, outcome: Outcome) -> Outcome:
    if not outcome.changed and outcome.action not in ("would-drain", "would-resume"):
        echo(f"# {outcome.action} {printable(outcome.node, 80)}: {printable(outcome.why, 300)}")
    return outcome


def drain(node: str, reason: str, *, apply: bool = False, echo=print, measured_hosts=None,
          scontrol: str | None = None) -> Outcome:
    """Drain one measured node with an owned reason; prints the command (shell-quoted) and runs it with apply.

    Skips (never raises for the node's sake) when the node is not one plain name, was not measured, is unknown
    to Slurm, carries someone else's reason or is out of service for another cause; re-reads it right before
    the update and skips if anything changed."""
    try:
        validate_node_name(node)
    except UsageError as err:
        return _comment(echo, Outcome(printable(node, 80), "skipped", str(err)))
    if measured_hosts is None or node not in measured_hosts:
        return _comment(echo, Outcome(node, "skipped", "was not measured in these results; only measured hosts drain"))
    argv = drain_argv(node, reason)
    if not apply and not (scontrol or shutil.which("scontrol")):
        echo(f"# unchecked (scontrol not on PATH, current reason not read): {shell_line(argv)}")
        return Outcome(node, "skipped", "scontrol not on PATH: printed commented out", tuple(argv))
    first = node_info(node, scontrol)
    doubt = _drain_doubt(first, node)
    if doubt:
        return _comment(echo, Outcome(node, "skipped", doubt))
    echo(shell_line(argv))
    if not apply:
        return Outcome(node, "would-drain", "printed", tuple(argv))
    again = node_info(node, scontrol)  # right before the update: anything new since the first read is a doubt
    if again is None or _drain_doubt(again, node) or (again.reason, again.reason_user) != (first.reason, first.reason_user):
        return _comment(echo, Outcome(node, "skipped", "its state or reason changed while we looked; not touched"))
    proc = _run([_scontrol(scontrol), *argv[1:]])
    if proc.returncode != 0:
        return _comment(echo, Outcome(node, "failed", " ".join((proc.stderr or proc.stdout).split())[:200], tuple(argv)))
    return Outcome(node, "drained", reason, tuple(argv))


def resume(node: str, *, apply: bool = False, echo=print, scontrol: str | None = None) -> Outcome:
    """Resume one node only if fabricbench drained it (its current reason is owned); re-read right before."""
    try:
        validate_node_name(node)
    except UsageError as err:
        return _comment(echo, Outcome(printable(node, 80), "skipped", str(err)))
    argv = resume_argv(node)
    first = node_info(node, scontrol)
    if first is None:
        return _comment(echo, Outcome(node, "skipped", "Slurm does not list exactly one node with this name"))
    if not owned(first.reason):
        why = f"reason {printable(first.reason, 80)!r} is not fabricbench's" if first.reason else "has no reason (not drained by fabricbench)"
        return _comment(echo, Outcome(node, "skipped", why + "; not resumed"))
    echo(shell_line(argv))
    if not apply:
        return Outcome(node, "would-resume", "printed", tuple(argv))
    again = node_info(node, scontrol)  # right before the update
    if again is None or (again.reason, again.reason_user) != (first.reason, first.reason_user):
        return _comment(echo, Outcome(node, "skipped", "its state or reason changed while we looked; not touched"))
    proc = _run([_scontrol(scontrol), *argv[1:]])
    if proc.returncode != 0:
        return _comment(echo, Outcome(node, "failed", " ".join((proc.stderr or proc.stdout).split())[:200], tuple(argv)))
    return Outcome(node, "resumed", first.reason, tuple(argv))
