"""`fabricbench health schedule`: a Slurm scrontab entry that runs `fabricbench health run` periodically.

scrontab (Slurm >= 20.11, needs `ScronParameters=enable` in slurm.conf) keeps cron lines per user; `#SCRON`
lines before an entry carry sbatch options. `scrontab FILE` replaces the user's whole table, so installing
reads the current one (`scrontab -l`), replaces only the block between our markers and writes it back.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile

from fabricbench.errors import UsageError

BEGIN = "# BEGIN fabricbench health (written by 'fabricbench health schedule')"
END = "# END fabricbench health"
_CRON_FIELD = re.compile(r"^[0-9*,/\-]+$")


def entry(cron: str, args: list[str], partition: str | None, time_limit: str, python: str) -> str:
    fields = cron.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise UsageError(f"--at {cron!r}: five cron fields (minute hour day month weekday), e.g. '0 2 * * *'")
    opts = [f"--time={time_limit}", "--job-name=fabricbench-health"]
    if partition:
        opts.append(f"--partition={partition}")
    cmd = " ".join(shlex.quote(a) for a in [python, "-m", "fabricbench", "health", "run", *args])
    return "\n".join([BEGIN, "#SCRON " + " ".join(shlex.quote(o) for o in opts), f"{' '.join(fields)} {cmd}", END]) + "\n"


def merge(current: str, block: str) -> str:
    """`current` scrontab with our block replaced (or appended); everything else kept as it was."""
    out, skipping = [], False
    for line in current.splitlines():
        if line.strip() == BEGIN:
            skipping = True
            continue
        if skipping and line.strip() == END:
            skipping = False
            continue
        if not skipping:
            out.append(line)
    text = "\n".join(out).rstrip("\n")
    return (text + "\n" if text else "") + block


def install(block: str) -> str:
    import shutil

    if shutil.which("scrontab") is None:
        raise UsageError("scrontab is not on PATH (Slurm >= 20.11 client tools); print the entry without --install "
                         "and add it with 'scrontab -e', or use the systemd timer in docs/health.md")
    cur = subprocess.run(["scrontab", "-l"], capture_output=True, text=True, timeout=30)
    if cur.returncode != 0 and "disabled" in (cur.stderr + cur.stdout).lower():
        raise UsageError("scrontab is disabled on this cluster: add ScronParameters=enable to slurm.conf")
    current = cur.stdout if cur.returncode == 0 else ""
    merged = merge(current, block)
    with tempfile.NamedTemporaryFile("w", suffix=".scrontab", delete=False) as fh:
        fh.write(merged)
        path = fh.name
    proc = subprocess.run(["scrontab", path], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise UsageError(f"scrontab refused the table: {' '.join((proc.stderr or proc.stdout).split())[:200]}")
    return merged
