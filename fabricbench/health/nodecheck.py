"""Run node-local checks: each selected check once, a failing one once more (a transient reading is not a
fault; Azure's NHC added retries for the same reason), and one verdict for the node.

Exit codes as `analyze`: 0 every check passed, 1 something failed, 3 nothing failed but something could not
be checked (inconclusive: never reported as healthy).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from fabricbench.errors import UsageError
from fabricbench.health.checks import CheckResult, Sources, all_checks


@dataclass
class NodeReport:
    node: str
    results: list[CheckResult] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def status(self) -> str:
        if self.failed:
            return "fail"
        if any(r.status in ("unknown",) for r in self.results) or not self.results:
            return "inconclusive"
        return "pass"

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "fail": 1, "inconclusive": 3}[self.status]

    def not_checked(self) -> list[str]:
        return [f"{r.name}: {item}" for r in self.results for item in r.not_checked]


def node_name() -> str:
    return socket.gethostname().split(".")[0]


def select(names: list[str] | None) -> list[str]:
    known = all_checks()
    if not names:
        return list(known)
    bad = [n for n in names if n not in known]
    if bad:
        raise UsageError(f"unknown check(s) {', '.join(bad)}; known: {', '.join(known)}")
    return names


def run_checks(src: Sources, names: list[str] | None = None, node: str | None = None, retry: bool = True) -> NodeReport:
    checks = all_checks()
    report = NodeReport(node or node_name(), started=time.time())
    t0 = time.monotonic()
    for name in select(names):
        t = time.monotonic()
        result = checks[name].fn(src)
        if result.status == "fail" and retry and name != "xid":  # an XID line is a fact, not a reading
            again = checks[name].fn(src)
            if again.status != "fail":
                again.summary += " (failed once, passed on the retry)"
            result = again
        result.seconds = time.monotonic() - t
        report.results.append(result)
    report.seconds = time.monotonic() - t0
    return report


def render(report: NodeReport) -> str:
    lines = [f"# fabricbench health node {report.node}: {report.status} ({report.seconds:.2f} s)"]
    for r in report.results:
        lines.append(f"{r.status.upper():8s} {r.name:7s} {r.summary}")
        if r.compared_with:
            lines.append(f"{'':17s}compared with: {r.compared_with}")
    missing = report.not_checked()
    if missing:
        lines.append("not checked:")
        lines += [f"  - {m}" for m in missing]
    return "\n".join(lines) + "\n"
