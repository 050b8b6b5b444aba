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


@app.command("label")
def label_command(
    checkpoint: Annotated[Path, typer.Option(help="Teacher checkpoint directory.")],
    dataset_dir: Annotated[Path, typer.Option(help="Dataset directory.")] = Path(".relkd/data/sim"),
    split: Annotated[
        list[str] | None, typer.Option(help="Splits whose judged pairs to label (repeatable).")
    ] = None,
    explain: Annotated[bool, typer.Option(help="Ask a generative teacher for rationales.")] = False,
    chunk: Annotated[int, typer.Option(help="Pairs per labeling call.")] = 512,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
) -> None:
    """Label judged pairs offline and write the dataset's teacher_labels table."""
    from rich.progress import Progress

    from training.data import storage
    from training.teacher.data import load_split
    from training.teacher.labeler import TeacherLabeler

    labeler = TeacherLabeler.from_checkpoint(checkpoint, device=device)
    pairs = [p for name in split or ["train"] for p in load_split(dataset_dir, name)]
    rows = []
    with Progress(transient=True) as progress:
        task = progress.add_task("teacher labeling", total=len(pairs))
        for start in range(0, len(pairs), chunk):
            batch = pairs[start : start + chunk]
            labels = labeler.label([(p.query, p.product) for p in batch], explain=explain)
            for pair, label in zip(batch, labels, strict=True):
                rows.append(
                    {
                        "query_id": pair.query_id,
                        "query": pair.query,
                        "product_id": pair.product["product_id"],
                        "grade_probs": list(label.grade_probs),
                        "expected_score": label.expected_score,
                        "teacher_model": labeler.name,
                        "teacher_version": labeler.version,
                        "category_match": int(label.category_match),
                        "brand_match": int(label.brand_match),
                        "attribute_match": int(label.attribute_match),
                    }
                )
            progress.advance(task, len(batch))
    path = storage.write_table(dataset_dir, "teacher_labels", rows)
    typer.echo(
        json.dumps(
            {
                "teacher_labels": str(path),
                "pairs": len(rows),
                "teacher": f"{labeler.name}@{labeler.version}",
                "malformed_generations": labeler.stats.malformed_generations,
            }
        )
    )
