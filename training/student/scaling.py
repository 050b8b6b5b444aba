"""Scaling experiment: test NDCG@10 as the teacher-labeled (augmented) set grows.

Trains, for each student kind, one human-only student and one student per augmented
size, all with the same human data, steps and seed, and evaluates each best
checkpoint on a held-out split with ``training.eval.evaluate.evaluate_scorer`` (the
same code as `relkd eval`). This is Walmart's "the student keeps improving as the
augmented set grows" check. Reference models (the teacher, BM25; any `relkd eval`
model spec) are evaluated on the same split and drawn as lines in ``scaling.png``.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from training.eval.evaluate import evaluate_scorer
from training.eval.plots import CurvePoint, Reference, plot_ndcg_vs_augmented
from training.eval.scorer import build_scorer

# References may name a trained model (`teacher=PATH`, `student=PATH`); importing the
# eval_kind modules registers those kinds.
from training.student import eval_kind as _student_kind  # noqa: F401
from training.student.checkpoint import load_student
from training.student.config import StudentKind, StudentTrainConfig
from training.student.train import train
from training.teacher import eval_kind as _teacher_kind  # noqa: F401

RESULTS_JSON = "scaling.json"
PLOT_PNG = "scaling.png"


def _train_and_evaluate(config: StudentTrainConfig, split: str, size: int) -> dict[str, Any]:
    """One grid point; a top-level function so worker processes can run it."""
    result = train(config)
    scores = evaluate_scorer(load_student(config.output_dir), config.dataset_dir, split)
    return {
        "kind": str(config.kind),
        "augmented_queries": size,
        "teacher_queries": result.teacher_queries,
        "human_queries": result.human_queries,
        "steps": result.steps,
        "dev_ndcg@10": result.best_dev_ndcg10,
        f"{split}_ndcg@10": scores["ndcg@10"],
        f"{split}_ndcg_esci@10": scores["ndcg_esci@10"],
        "pairs_per_s": result.pairs_per_s,
        "checkpoint": str(config.output_dir),
    }


def grid_configs(
    base: StudentTrainConfig, sizes: Sequence[int], kinds: Sequence[StudentKind]
) -> list[tuple[StudentTrainConfig, int]]:
    """(config, augmented size) of every run: per kind, human-only (size 0) and each size."""
    if not sizes:
        raise ValueError("sizes: give at least one augmented-set size")
    if min(sizes) < 1:
        raise ValueError(f"sizes: must be positive (human-only is always trained), got {sizes}")
    grid = []
    for kind in kinds:
        for size in (0, *sorted(set(sizes))):
            label = "human-only" if size == 0 else f"augmented-{size}"
            update = {
                "kind": kind,
                "use_teacher_labels": size > 0,
                "augmented_queries": size or None,
                "output_dir": base.output_dir / f"{kind}-{label}",
                "name": f"{base.name}-{kind}-{label}",
            }
            grid.append((base.model_copy(update=update), size))
    return grid


def run_scaling(
    base: StudentTrainConfig,
    sizes: Sequence[int],
    kinds: Sequence[StudentKind],
    *,
    split: str = "test",
    references: Sequence[str] = (),
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Train and evaluate the grid; write ``scaling.json`` and ``scaling.png``.

    The runs are independent, so ``jobs`` > 1 trains that many at once in worker
    processes: on a CPU, two single-threaded runs get more done than one run with two
    threads (set ``torch_threads`` to 1 with it).
    """
    if jobs < 1:
        raise ValueError(f"jobs: must be at least 1, got {jobs}")
    grid = grid_configs(base, sizes, kinds)
    rows: list[dict[str, Any]] = []
    for spec in references:
        scores = evaluate_scorer(build_scorer(spec, base.dataset_dir), base.dataset_dir, split)
        rows.append(
            {
                "kind": "reference",
                "model": spec,
                f"{split}_ndcg@10": scores["ndcg@10"],
                f"{split}_ndcg_esci@10": scores["ndcg_esci@10"],
            }
        )
    base.output_dir.mkdir(parents=True, exist_ok=True)

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        (base.output_dir / RESULTS_JSON).write_text(json.dumps(rows, indent=2) + "\n")

    if jobs == 1:
        for config, size in grid:
            record(_train_and_evaluate(config, split, size))
    else:
        # spawn: a forked child would inherit torch's thread pools and any open handles.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = [pool.submit(_train_and_evaluate, c, split, n) for c, n in grid]
            for future in as_completed(futures):
                record(future.result())
    order = {(str(c.kind), n): i for i, (c, n) in enumerate(grid)}
    rows.sort(
        key=lambda r: -1 if r["kind"] == "reference" else order[r["kind"], r["augmented_queries"]]
    )
    (base.output_dir / RESULTS_JSON).write_text(json.dumps(rows, indent=2) + "\n")
    plot_scaling(rows, base.output_dir / PLOT_PNG, split)
    return rows


def plot_scaling(rows: list[dict[str, Any]], path: Path, split: str = "test") -> None:
    """The grid's test NDCG@10 against augmented-set size, one line per kind."""
    metric = f"{split}_ndcg@10"
    students = [r for r in rows if r["kind"] != "reference"]
    curves: dict[str, list[CurvePoint]] = {}
    for r in students:
        label = f"student: {r['kind']} ({r['human_queries']} human queries)"
        curves.setdefault(label, []).append((r["augmented_queries"], r[metric], None))
    references: list[Reference] = [
        (r["model"], r[metric], None) for r in rows if r["kind"] == "reference"
    ]
    plot_ndcg_vs_augmented(curves, references, path, split)


def markdown_table(rows: list[dict[str, Any]], split: str = "test") -> str:
    lines = [
        f"| model | teacher-labeled queries | human queries | dev NDCG@10 | {split} NDCG@10 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["kind"] == "reference":
            lines.append(f"| {r['model']} | – | – | – | {r[f'{split}_ndcg@10']:.4f} |")
            continue
        lines.append(
            f"| {r['kind']} | {r['teacher_queries']} | {r['human_queries']} | "
            f"{r['dev_ndcg@10']:.4f} | {r[f'{split}_ndcg@10']:.4f} |"
        )
    return "\n".join(lines)
