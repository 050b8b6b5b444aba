"""`relkd data materialize`: the labels topic into a dataset's teacher_labels table.

Mounted on the `relkd data` group by ``ops.cli``; it lives with the materializer because
it needs the broker settings (``services.core``), which ``training`` never imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def materialize_command(
    dataset: Annotated[Path, typer.Option(help="Dataset directory that receives teacher_labels.")],
    group: Annotated[str, typer.Option(help="Consumer group of the materializer.")] = (
        "dataset-materializer"
    ),
    idle: Annotated[float, typer.Option(help="Stop after this many quiet seconds.")] = 10.0,
    expected: Annotated[
        int | None, typer.Option(help="Stop once this many labels were written.")
    ] = None,
) -> None:
    """Consume relevance.labels.v1 into the teacher_labels table (newest teacher per pair)."""
    from services.core.settings import get_settings
    from services.label_store.materializer import materialize

    settings = get_settings()
    if not settings.kafka_bootstrap:
        raise typer.BadParameter("set RELKD_KAFKA_BOOTSTRAP", param_hint="RELKD_KAFKA_BOOTSTRAP")
    rows = materialize(settings, dataset, group=group, idle_s=idle, expected=expected)
    typer.echo(json.dumps({"dataset": str(dataset), "teacher_labels": rows}))
