"""`relkd teacher ...`: train a relevance teacher and label pairs with it.

Both commands are built from their config class (:mod:`training.config_cli`):
``--config FILE`` and ``--set FIELD=VALUE`` reach every field, ``--help`` lists them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from training.config_cli import ConfigFileOption, SetOption, config_command, load_config
from training.teacher.config import TeacherLabelConfig, TeacherTrainConfig

app = typer.Typer(
    help="Train the LLM relevance teacher (soft targets, optional chain of thought) and "
    "label pairs with it.",
    no_args_is_help=True,
)

DatasetDirOption = Annotated[
    Path | None, typer.Option(help="Dataset directory (field dataset_dir).")
]


@app.command("train", cls=config_command(TeacherTrainConfig))
def train_command(
    config: ConfigFileOption = None,
    set_: SetOption = None,
    dataset_dir: DatasetDirOption = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Checkpoint directory (field output_dir).")
    ] = None,
    epochs: Annotated[
        float | None, typer.Option(help="Passes over the train split (field epochs).")
    ] = None,
) -> None:
    """Fine-tune a teacher on the train split; early stopping and calibration on dev."""
    resolved = load_config(
        TeacherTrainConfig,
        config,
        set_ or [],
        dataset_dir=dataset_dir,
        output_dir=output_dir,
        epochs=epochs,
    )
    from training.teacher.train import train

    info = train(resolved)
    typer.echo(json.dumps({"output_dir": str(resolved.output_dir), "dev": info["dev"]}))


@app.command("label", cls=config_command(TeacherLabelConfig))
def label_command(
    config: ConfigFileOption = None,
    set_: SetOption = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Teacher checkpoint directory (field checkpoint).")
    ] = None,
    dataset_dir: DatasetDirOption = None,
    candidates: Annotated[
        Path | None,
        typer.Option(help="Candidates JSONL to label instead of judged pairs (field candidates)."),
    ] = None,
) -> None:
    """Label judged pairs or generated candidates; write the dataset's teacher_labels table."""
    resolved = load_config(
        TeacherLabelConfig,
        config,
        set_ or [],
        checkpoint=checkpoint,
        dataset_dir=dataset_dir,
        candidates=candidates,
    )
    from rich.progress import Progress

    from training.data import storage
    from training.teacher.labeler import TeacherLabeler

    try:
        pairs = list(_pairs(resolved))
    except (OSError, ValueError) as error:
        source = "candidates" if resolved.candidates is not None else "dataset_dir"
        raise typer.BadParameter(str(error), param_hint=source) from error
    try:
        labeler = TeacherLabeler.from_checkpoint(resolved.checkpoint, device=resolved.device)
    except (FileNotFoundError, ValueError) as error:
        # Exit code 2: the Job's podFailurePolicy fails at once, a retry cannot fix it.
        raise typer.BadParameter(str(error), param_hint="checkpoint") from error
    rows = []
    with Progress(transient=True) as progress:
        task = progress.add_task("teacher labeling", total=len(pairs))
        for start in range(0, len(pairs), resolved.chunk):
            batch = pairs[start : start + resolved.chunk]
            labels = labeler.label(
                [(query, product) for _, query, product in batch], explain=resolved.explain
            )
            for (query_id, query, product), label in zip(batch, labels, strict=True):
                rows.append(
                    {
                        "query_id": query_id,
                        "query": query,
                        "product_id": product["product_id"],
                        "grade_probs": list(label.grade_probs),
                        "expected_score": label.expected_score,
                        "teacher_model": labeler.name,
                        "teacher_version": labeler.version,
                        **label.rationale_columns(),
                    }
                )
            progress.advance(task, len(batch))
    path = storage.write_table(resolved.dataset_dir, "teacher_labels", rows)
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


Pair = tuple[str, str, Mapping[str, Any]]


def _pairs(config: TeacherLabelConfig) -> Iterator[Pair]:
    """(query_id, query, product) of every pair to label, each pair once."""
    if config.candidates is None:
        from training.teacher.data import load_split

        for split in config.splits:
            for pair in load_split(config.dataset_dir, split):
                yield pair.query_id, pair.query, pair.product
        return
    from contracts.candidates import read_candidate_batches
    from contracts.products import product_row

    # A resumed `candidates generate` may have written a batch twice (at least once).
    seen: set[tuple[str, str]] = set()
    for batch in read_candidate_batches(config.candidates):
        for product in batch.products:
            key = (batch.query_id, product.product_id)
            if key not in seen:
                seen.add(key)
                yield batch.query_id, batch.query, product_row(product)
