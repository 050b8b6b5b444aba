"""`relkd teacher ...`: train a relevance teacher and label pairs with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from training.teacher.config import Precision, TeacherKind, TeacherTrainConfig

app = typer.Typer(
    help="Train the LLM relevance teacher (soft targets, optional chain of thought) and "
    "label pairs with it.",
    no_args_is_help=True,
)


def _parse_set(items: list[str]) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set {item!r}: expected FIELD=VALUE")
        values[key.strip()] = yaml.safe_load(raw)
    return values


@app.command("train")
def train_command(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file of TeacherTrainConfig fields.")
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(help="HF checkpoint dir; default: all-MiniLM-L6-v2.")
    ] = None,
    kind: Annotated[TeacherKind | None, typer.Option(help="classifier or generative.")] = None,
    dataset_dir: Annotated[Path | None, typer.Option(help="Dataset directory.")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Checkpoint directory.")] = None,
    name: Annotated[str | None, typer.Option(help="Teacher name in labels.")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    grad_accumulation: Annotated[int | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option()] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--no-lora")] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    lora_alpha: Annotated[int | None, typer.Option()] = None,
    label_smoothing: Annotated[float | None, typer.Option()] = None,
    template: Annotated[str | None, typer.Option(help="rich, title or a format string.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    patience: Annotated[int | None, typer.Option(help="Early-stopping patience.")] = None,
    precision: Annotated[Precision | None, typer.Option()] = None,
    resume: Annotated[bool | None, typer.Option("--resume/--no-resume")] = None,
    max_train_examples: Annotated[int | None, typer.Option()] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any other field: --set warmup_ratio=0.1 (YAML value)."),
    ] = None,
) -> None:
    """Fine-tune a teacher on the train split; early stopping and calibration on dev."""
    from training.teacher.train import train

    flags = {
        "backbone": backbone,
        "kind": kind,
        "dataset_dir": dataset_dir,
        "output_dir": output_dir,
        "name": name,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "grad_accumulation": grad_accumulation,
        "max_length": max_length,
        "lora": lora,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "label_smoothing": label_smoothing,
        "template": template,
        "seed": seed,
        "patience": patience,
        "precision": precision,
        "resume": resume,
        "max_train_examples": max_train_examples,
    }
    try:
        resolved = TeacherTrainConfig.load(config, **{**_parse_set(set_ or []), **flags})
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    info = train(resolved)
    typer.echo(json.dumps({"output_dir": str(resolved.output_dir), "dev": info["dev"]}))
