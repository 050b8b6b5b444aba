"""`relkd eval`: ranking metrics of baselines and trained models on a dataset split.

It sits above ``training.eval`` (the harness, which knows no model) and the teacher and
student packages, whose ``eval_kind`` modules register the ``teacher=PATH`` and
``student=PATH`` kinds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def eval_command(
    dataset: Annotated[Path, typer.Option(help="Dataset directory.")] = Path(".relkd/data/sim"),
    model: Annotated[
        list[str] | None,
        typer.Option(help="KIND or KIND=ARGUMENT, repeatable (bm25, bi-encoder, ...)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    k: Annotated[list[int] | None, typer.Option(help="NDCG cutoffs, repeatable.")] = None,
    relevant_grade: Annotated[int, typer.Option(help="Lowest grade counted relevant.")] = 3,
    max_queries: Annotated[int | None, typer.Option(help="Evaluate the first N only.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """Evaluate models on a dataset split (re-ranking each query's judged products)."""
    # Imported here so `relkd --help` does not pay for scipy and the model libraries.
    # Importing the eval_kind modules registers the trained-model kinds.
    from training.eval.evaluate import evaluate_scorer
    from training.eval.scorer import build_scorer
    from training.student import eval_kind as _student_kind  # noqa: F401
    from training.teacher import eval_kind as _teacher_kind  # noqa: F401

    results = {}
    for spec in model or ["bm25", "bi-encoder"]:
        scorer = build_scorer(spec, dataset)
        results[spec] = evaluate_scorer(
            scorer,
            dataset,
            split=split,
            ks=k or [5, 10],
            relevant_grade=relevant_grade,
            max_queries=max_queries,
            show_progress=not as_json,
        )
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    names = list(next(iter(results.values())))
    table = Table(title=f"{dataset} / {split}")
    table.add_column("metric")
    for spec in results:
        table.add_column(spec, justify="right")
    for name in names:
        table.add_row(name, *(f"{results[s].get(name, float('nan')):.4f}" for s in results))
    Console().print(table)
