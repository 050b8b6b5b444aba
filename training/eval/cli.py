"""`relkd eval`: ranking metrics of baselines and models on a dataset split."""

from __future__ import annotations

import typer


def eval_command() -> None:
    """Evaluate models on a dataset split."""
    raise typer.Exit("relkd eval is not implemented yet")
