"""`python -m fabricbench.gpu nvlink|ib|selftest ...`: the GPU commands alone, with fabricbench's error
handling (one line, exit 2 for bad input), without importing the other areas: for machines where another
area's dependencies are missing (the GPU test machine cannot install anything) and for this area's tests."""

from __future__ import annotations

from fabricbench.console import new_app, run_app
from fabricbench.gpu.cli import register

app = new_app("fabricbench GPU commands (nvlink, ib, selftest).")
register(app)


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv)


if __name__ == "__main__":
    main()
