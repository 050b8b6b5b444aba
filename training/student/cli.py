"""`relkd student ...`: train distilled students.

``relkd student train --config student.yaml [--flag value ...]``: flags override the
YAML's fields; without ``--config`` the flags alone configure the run.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from training.student.config import StudentKind, StudentTrainConfig

app = typer.Typer(help="Train distilled student models.", no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def student() -> None:
    """Train distilled student models."""


@app.command("train")
def train_command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of StudentTrainConfig fields.")
    ] = None,
    kind: Annotated[StudentKind | None, typer.Option(help="cross-encoder or two-tower.")] = None,
    dataset_dir: Annotated[Path | None, typer.Option(help="Dataset directory.")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Checkpoint directory.")] = None,
    name: Annotated[str | None, typer.Option(help="Model name in student.json.")] = None,
    version: Annotated[str | None, typer.Option(help="Model version in student.json.")] = None,
    base_model: Annotated[str | None, typer.Option(help="HF model dir to start from.")] = None,
    num_layers: Annotated[int | None, typer.Option(help="Transformer layers to keep.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max tokens per input.")] = None,
    teacher_labels: Annotated[
        bool | None,
        typer.Option("--teacher-labels/--no-teacher-labels", help="Use the teacher_labels table."),
    ] = None,
    augmented_queries: Annotated[
        int | None, typer.Option(help="Teacher-labeled queries to use (default: all).")
    ] = None,
    human_fraction: Annotated[
        float | None, typer.Option(help="Fraction of human-labeled train queries.")
    ] = None,
    margin_mse: Annotated[float | None, typer.Option(help="Margin-MSE loss weight.")] = None,
    mse: Annotated[float | None, typer.Option(help="Pointwise MSE loss weight.")] = None,
    kl: Annotated[float | None, typer.Option(help="Grade KL loss weight.")] = None,
    cot: Annotated[float | None, typer.Option(help="Rationale (CoT) loss weight.")] = None,
    queries_per_batch: Annotated[int | None, typer.Option(help="Queries per batch.")] = None,
    pairs_per_query: Annotated[int | None, typer.Option(help="Pairs per query.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per step.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Dev NDCG@10 every N steps.")] = None,
    patience: Annotated[int | None, typer.Option(help="Evaluations without gain.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="torch device.")] = None,
    torch_threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    resume: Annotated[
        bool | None, typer.Option("--resume/--no-resume", help="Continue an interrupted run.")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = None,
) -> None:
    """Train a student; print the run summary as JSON."""
    import transformers

    from training.student.train import train

    # Truncating layers makes transformers list every skipped weight; rich shows progress.
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    overrides = {
        "kind": kind,
        "dataset_dir": dataset_dir,
        "output_dir": output_dir,
        "name": name,
        "version": version,
        "base_model": base_model,
        "num_layers": num_layers,
        "max_length": max_length,
        "use_teacher_labels": teacher_labels,
        "augmented_queries": augmented_queries,
        "human_fraction": human_fraction,
        "margin_mse": margin_mse,
        "mse": mse,
        "kl": kl,
        "cot": cot,
        "queries_per_batch": queries_per_batch,
        "pairs_per_query": pairs_per_query,
        "lr": lr,
        "max_steps": max_steps,
        "grad_accum": grad_accum,
        "eval_every": eval_every,
        "patience": patience,
        "seed": seed,
        "device": device,
        "torch_threads": torch_threads,
        "resume": resume,
        "progress": progress,
    }
    try:
        cfg = (
            StudentTrainConfig.from_yaml(config, **overrides)
            if config is not None
            else StudentTrainConfig.from_mapping({}, **overrides)
        )
        result = train(cfg)
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]student train: {exc}")
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(asdict(result), indent=2))


def train_main() -> None:
    """``python -m training.student.train``: the train command as a standalone program."""
    typer.run(train_command)


@app.command("scale")
def scale_command(
    sizes: Annotated[
        str, typer.Option(help="Comma-separated augmented-set sizes (teacher-labeled queries).")
    ],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of StudentTrainConfig fields.")
    ] = None,
    kinds: Annotated[str, typer.Option(help="Comma-separated student kinds.")] = "cross-encoder",
    dataset_dir: Annotated[Path | None, typer.Option(help="Dataset directory.")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Parent dir of the students.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps per student.")] = None,
    torch_threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
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
    """Train a human-only student and one per augmented size; print test NDCG@10."""
    import transformers

    from training.student.scaling import markdown_table, run_scaling

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    overrides = {
        "dataset_dir": dataset_dir,
        "output_dir": output_dir,
        "max_steps": max_steps,
        "torch_threads": torch_threads,
    }
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
        kind_list = [StudentKind(k.strip()) for k in kinds.split(",") if k.strip()]
        base = (
            StudentTrainConfig.from_yaml(config, **overrides)
            if config is not None
            else StudentTrainConfig.from_mapping({}, **overrides)
        )
        rows = run_scaling(
            base, size_list, kind_list, split=split, references=reference or [], jobs=jobs
        )
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]student scale: {exc}")
        raise typer.Exit(2) from exc
    typer.echo(markdown_table(rows, split))
