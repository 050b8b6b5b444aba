"""`relkd student ...`: train distilled students.

``relkd student train [--config student.yaml] [--set FIELD=VALUE ...]``: every field of
:class:`StudentTrainConfig` comes from the file or ``--set`` (``relkd student train --help``
lists them); the directories and the step count also have flags.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from training.config_cli import ConfigFileOption, SetOption, config_command, load_config
from training.student.config import StudentKind, StudentTrainConfig

app = typer.Typer(help="Train distilled student models.", no_args_is_help=True)
console = Console(stderr=True)

DatasetDirOption = Annotated[
    Path | None, typer.Option(help="Dataset directory (field dataset_dir).")
]
OutputDirOption = Annotated[
    Path | None, typer.Option(help="Checkpoint directory (field output_dir).")
]
MaxStepsOption = Annotated[int | None, typer.Option(help="Optimizer steps (field max_steps).")]


@app.callback()
def student() -> None:
    """Train distilled student models."""


def _quiet_transformers() -> None:
    import transformers

    # Truncating layers makes transformers list every skipped weight; rich shows progress.
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@app.command("train", cls=config_command(StudentTrainConfig))
def train_command(
    config: ConfigFileOption = None,
    set_: SetOption = None,
    dataset_dir: DatasetDirOption = None,
    output_dir: OutputDirOption = None,
    max_steps: MaxStepsOption = None,
) -> None:
    """Train a student; print the run summary as JSON."""
    resolved = load_config(
        StudentTrainConfig,
        config,
        set_ or [],
        dataset_dir=dataset_dir,
        output_dir=output_dir,
        max_steps=max_steps,
    )
    _quiet_transformers()
    from training.student.train import train

    try:
        result = train(resolved)
    except ValueError as exc:
        console.print(f"[red]student train: {exc}")
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(asdict(result), indent=2))


def train_main() -> None:
    """``python -m training.student.train``: the train command as a standalone program."""
    typer.run(train_command)


@app.command("scale", cls=config_command(StudentTrainConfig))
def scale_command(
    sizes: Annotated[
        str, typer.Option(help="Comma-separated augmented-set sizes (teacher-labeled queries).")
    ],
    config: ConfigFileOption = None,
    set_: SetOption = None,
    kinds: Annotated[str, typer.Option(help="Comma-separated student kinds.")] = "cross-encoder",
    dataset_dir: DatasetDirOption = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Parent dir of the students (field output_dir).")
    ] = None,
    max_steps: MaxStepsOption = None,
    split: Annotated[str, typer.Option(help="Split the students are compared on.")] = "test",
    jobs: Annotated[
        int,
        typer.Option(help="Students trained at once (worker processes); use 1 torch thread each."),
    ] = 1,
    reference: Annotated[
        list[str] | None,
        typer.Option(help="`relkd eval` model spec drawn as a reference line (repeatable)."),
    ] = None,
) -> None:
    """Train a human-only student and one per augmented size; print test NDCG@10.

    The config fields configure every student; kind and augmented_queries vary per run.
    """
    base = load_config(
        StudentTrainConfig,
        config,
        set_ or [],
        dataset_dir=dataset_dir,
        output_dir=output_dir,
        max_steps=max_steps,
    )
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
        kind_list = [StudentKind(k.strip()) for k in kinds.split(",") if k.strip()]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--sizes/--kinds") from exc
    _quiet_transformers()
    from training.student.scaling import markdown_table, run_scaling

    try:
        rows = run_scaling(
            base, size_list, kind_list, split=split, references=reference or [], jobs=jobs
        )
    except ValueError as exc:
        console.print(f"[red]student scale: {exc}")
        raise typer.Exit(2) from exc
    typer.echo(markdown_table(rows, split))
