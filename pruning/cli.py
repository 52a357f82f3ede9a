"""Command-line glue for this subpackage."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the `nmlab` app (none yet)."""
