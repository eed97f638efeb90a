"""The `fabricbench` command. Thin by design: each area registers its commands; the library does the work.

Every area module exposes `register(app)`; heavy imports (torch, mpi4py, cupy) stay inside the commands so
that `fabricbench --help` is instant.
"""

from __future__ import annotations

import importlib
import sys

import typer

try:  # typer >= 0.20 vendors its own click: its exceptions are the ones raised
    from typer._click.exceptions import ClickException, UsageError as ClickUsageError
except ImportError:  # pragma: no cover - older typer raises click's own
    from click.exceptions import ClickException, UsageError as ClickUsageError

from fabricbench.errors import EXIT_USAGE, FabricbenchError

app = typer.Typer(
    name="fabricbench",
    help="Collective-communication benchmarks and fabric diagnosis for GPU clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# One module per area; each adds its commands to `app`.
AREAS = [
    "fabricbench.run_cli",  # run, ops, worker (engine and local launcher)
    "fabricbench.topology.cli",  # topo discover|expect|show
    "fabricbench.gpu.cli",  # nvlink, ib, selftest
    "fabricbench.slurm.cli",  # submit, collect, sweep
    "fabricbench.lab.cli",  # lab up|down|degrade|heal|status|env
    "fabricbench.analyze.cli",  # analyze, simulate
]


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from fabricbench import __version__

        typer.echo(f"fabricbench {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


def _register_areas() -> None:
    for module_name in AREAS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and (module_name + ".").startswith(err.name + "."):  # area not built yet
                continue
            raise
        module.register(app)


_register_areas()


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; bad input becomes one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        # Outside standalone mode typer returns the code of an Exit (and 130 for Ctrl-C) instead of raising.
        code = app(args=args, prog_name="fabricbench", standalone_mode=False)
    except FabricbenchError as err:
        typer.echo(f"fabricbench: error: {_one_line(str(err))}", err=True)
        sys.exit(err.exit_code)
    except typer.Abort:
        typer.echo("fabricbench: interrupted", err=True)
        sys.exit(130)
    except ClickException as err:
        # Usage errors from option parsing: one line, with a pointer to --help.
        hint = ""
        ctx = getattr(err, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        typer.echo(f"fabricbench: error: {_one_line(err.format_message())}{hint}", err=True)
        sys.exit(EXIT_USAGE if isinstance(err, ClickUsageError) else err.exit_code)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("fabricbench: interrupted", err=True)
        sys.exit(130)
    code = code if isinstance(code, int) else 0
    if code == 130:
        typer.echo("fabricbench: interrupted", err=True)
    sys.exit(code)
