"""`relkd data ...`: catalog simulation, dataset loading and download."""

from __future__ import annotations

import typer

app = typer.Typer(help="Simulate, load and download relevance datasets.", no_args_is_help=True)
