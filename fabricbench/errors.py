"""Errors that the CLI turns into a one-line message and an exit code, never a traceback."""

from __future__ import annotations

# Exit codes shared by every command (documented in docs/exit-codes.md).
EXIT_OK = 0
EXIT_FAILED = 1  # the benchmark ran but something failed: wrong data, a rank died, a check did not hold
EXIT_USAGE = 2  # bad input: options, files, environment; nothing was measured


class FabricbenchError(Exception):
    """Base class: `str(err)` is the one line shown to the user."""

    exit_code = EXIT_FAILED


class UsageError(FabricbenchError):
    """Bad input (options, files, environment). Exit code 2."""

    exit_code = EXIT_USAGE


class RunFailed(FabricbenchError):
    """A run that started but did not succeed (rank died, hung, wrong data). Exit code 1."""

    exit_code = EXIT_FAILED


class Terminated(FabricbenchError):
    """The command got SIGTERM and stopped cleanly (ranks stopped, job cancelled, results kept). Exit 143
    (128 + 15), what a shell reports for a process ended by SIGTERM."""

    exit_code = 143
