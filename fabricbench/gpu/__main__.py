"""`python -m fabricbench.gpu nvlink|ib|selftest ...`: the GPU commands alone, with fabricbench's error
handling (one line, exit 2 for bad input), without importing the other areas: for machines where another
area's dependencies are missing (the GPU test machine cannot install anything) and for this area's tests."""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.20 vendors its own click: its exceptions are the ones raised
    from typer._click.exceptions import ClickException, UsageError as ClickUsageError
except ImportError:  # pragma: no cover - older typer raises click's own
    from click.exceptions import ClickException, UsageError as ClickUsageError

from fabricbench.errors import EXIT_USAGE, FabricbenchError
from fabricbench.gpu.cli import register

app = typer.Typer(name="fabricbench", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
register(app)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args, prog_name="fabricbench", standalone_mode=False)
    except FabricbenchError as err:
        typer.echo(f"fabricbench: error: {_one_line(str(err))}", err=True)
        sys.exit(err.exit_code)
    except ClickException as err:
        ctx = getattr(err, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"fabricbench: error: {_one_line(err.format_message())}{hint}", err=True)
        sys.exit(EXIT_USAGE if isinstance(err, ClickUsageError) else err.exit_code)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("fabricbench: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
