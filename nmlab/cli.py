"""The one `nmlab` command line: each subpackage registers its own commands."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="nmlab",
    help="A laboratory for N:M sparse weight formats.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _module in (
    "nmlab.formats.cli",
    "nmlab.pruning.cli",
    "nmlab.simulator.cli",
    "nmlab.run",
    "nmlab.sweep",
):
    importlib.import_module(_module).register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()
