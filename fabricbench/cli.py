"""The `fabricbench` command. Thin by design: each area registers its commands; the library does the work.

Every area module exposes `register(app)`; heavy imports (torch, mpi4py, cupy) stay inside the commands so
that `fabricbench --help` is instant.
"""

from __future__ import annotations

import importlib

import typer

from fabricbench.console import new_app, run_app

app = new_app("Collective-communication benchmarks and fabric diagnosis for GPU clusters.")

# One module per area; each adds its commands to `app`.
AREAS = [
    "fabricbench.run_cli",  # run, ops, worker (engine and local launcher)
    "fabricbench.topology.cli",  # topo discover|expect|show
    "fabricbench.gpu.cli",  # nvlink, ib, selftest
    "fabricbench.slurm.cli",  # submit, collect, sweep
    "fabricbench.lab.cli",  # lab up|down|degrade|heal|status|env
    "fabricbench.analyze.cli",  # analyze, simulate
    "fabricbench.tune.cli",  # tune, tune verify
    "fabricbench.health.cli",  # health node|checks|run|history|query|report|schedule
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; bad input becomes one line on stderr and exit code 2."""
    run_app(app, argv)
