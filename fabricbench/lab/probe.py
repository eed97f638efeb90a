"""A tiny TCP throughput probe between two lab nodes, bounded in time and bytes.

`measure(lab, "lab1", "lab2")` runs a receiver inside lab2 (on lab2's own lab address, an ephemeral port) and a
sender inside lab1 that streams for `seconds` (at most `max_bytes`), and returns the receiver's goodput in
bits/s. TCP/IP headers make goodput about 4-5 % lower than the tc rate on the wire. Only the lab's own
addresses are used. Run as `python -m fabricbench.lab.probe recv ADDR` / `send ADDR PORT SECONDS MAX_BYTES`
(that is what `measure` does inside the namespaces); only the standard library is imported.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

CHUNK = 1 << 16


def _recv(addr: str, idle_timeout: float = 10.0) -> None:
    srv = socket.socket()
    srv.bind((addr, 0))
    srv.listen(1)
    srv.settimeout(idle_timeout)
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    conn.settimeout(idle_timeout)
    total, first, last = 0, None, None
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        now = time.perf_counter()
        if first is None:
            first = now
        total += len(data)
        last = now
    elapsed = (last - first) if first is not None and last is not None and last > first else 0.0
    print(json.dumps({"bytes": total, "seconds": elapsed, "bps": total * 8 / elapsed if elapsed else 0.0}),
          flush=True)


def _send(addr: str, port: int, seconds: float, max_bytes: int) -> None:
    sock = socket.create_connection((addr, port), timeout=10)
    buf = b"\0" * CHUNK
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end and sent < max_bytes:
        sock.sendall(buf)
        sent += len(buf)
    sock.close()


def measure(lab, src: str, dst: str, seconds: float = 1.5, max_bytes: int = 512 << 20,
            python: str | None = None) -> float:
    """Goodput src -> dst in bits/s, measured inside the lab's namespaces."""
    from fabricbench.lab.manager import exec_argv
    from fabricbench.lab.netns import LabCommandFailed

    plan = lab.plan
    dst_addr = plan.node(dst).addr
    py = python or sys.executable
    recv = subprocess.Popen(exec_argv(lab, dst, [py, __file__, "recv", dst_addr]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port_line = recv.stdout.readline().strip()
        if not port_line.isdigit():
            raise LabCommandFailed(f"probe receiver in {dst} did not start: {recv.stderr.read()[:300]}")
        sender = subprocess.run(exec_argv(lab, src, [py, __file__, "send", dst_addr, port_line,
                                                      str(seconds), str(max_bytes)]),
                                timeout=seconds + 20, capture_output=True, text=True)
        if sender.returncode != 0:
            raise LabCommandFailed(f"probe sender in {src} failed: {' '.join(sender.stderr.split())[-300:]}")
        out, err = recv.communicate(timeout=20)
        return float(json.loads(out.strip().splitlines()[-1])["bps"])
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.communicate()


def main(argv: list[str]) -> int:
    if argv[:1] == ["recv"] and len(argv) == 2:
        _recv(argv[1])
        return 0
    if argv[:1] == ["send"] and len(argv) == 5:
        _send(argv[1], int(argv[2]), float(argv[3]), int(argv[4]))
        return 0
    print("usage: python -m fabricbench.lab.probe recv ADDR | send ADDR PORT SECONDS MAX_BYTES", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
