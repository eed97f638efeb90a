"""How every fabricbench command line runs: one Typer app, and bad input as one line on stderr with exit 2.

Shared by the `fabricbench` command (fabricbench.cli, every area) and by the single-area entry points
(`python -m fabricbench.gpu`, `python -m fabricbench.topology`), which must not import the other areas.
"""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.20 vendors its own click: its exceptions are the ones raised
    from typer._click.exceptions import ClickException, UsageError as ClickUsageError
except ImportError:  # pragma: no cover - older typer raises click's own
    from click.exceptions import ClickException, UsageError as ClickUsageError

from fabricbench.errors import EXIT_USAGE, FabricbenchError


def new_app(help_text: str) -> typer.Typer:
    return typer.Typer(name="fabricbench", help=help_text, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})


def _one_line(message: str) -> str:
    # a non-UTF-8 file name (surrogate escapes) is shown escaped, never an encoding error
    return " ".join(str(message).split()).encode("utf-8", "backslashreplace").decode("utf-8")


def _tolerant_streams() -> None:
    """Text that cannot be encoded (file names that are not UTF-8) is escaped on stdout/stderr, not fatal."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # replaced by a test harness or not a text stream
            pass


def run_app(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run `app` and exit: 0 ok, the command's own code, 2 for bad input (one line), 130 for Ctrl-C."""
    args = sys.argv[1:] if argv is None else argv
    _tolerant_streams()
    try:
        # Outside standalone mode typer returns the code of an Exit (and 130 for Ctrl-C) instead of raising.
        code = app(args=args, prog_name="fabricbench", standalone_mode=False)
    except FabricbenchError as err:
        typer.echo(f"fabricbench: error: {_one_line(str(err))}", err=True)
        sys.exit(err.exit_code)
    except ClickException as err:
        # Usage errors from option parsing: one line, with a pointer to --help.
        ctx = getattr(err, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"fabricbench: error: {_one_line(err.format_message())}{hint}", err=True)
        sys.exit(EXIT_USAGE if isinstance(err, ClickUsageError) else err.exit_code)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except (RecursionError, MemoryError) as err:  # last line of defence: readers bound depth and size themselves
        typer.echo(f"fabricbench: error: an input is too large or too deeply nested ({type(err).__name__}); "
                   "check the files given", err=True)
        sys.exit(EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("fabricbench: interrupted", err=True)
        sys.exit(130)
    code = code if isinstance(code, int) else 0
    if code == 130:
        typer.echo("fabricbench: interrupted", err=True)
    sys.exit(code)
