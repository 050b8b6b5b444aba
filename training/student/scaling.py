"""Scaling experiment: test NDCG@10 as the teacher-labeled (augmented) set grows.

Trains, for each student kind, one human-only student and one student per augmented
size, all with the same human data, steps and seed, and evaluates each best
checkpoint on a held-out split with ``training.eval.evaluate.evaluate_scorer`` (the
same code as `relkd eval`). This is Walmart's "the student keeps improving as the
augmented set grows" check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from training.eval.evaluate import evaluate_scorer
from training.student.checkpoint import load_student
from training.student.config import StudentKind, StudentTrainConfig
from training.student.train import train

RESULTS_JSON = "scaling.json"


def run_scaling(
    base: StudentTrainConfig,
    sizes: Sequence[int],
    kinds: Sequence[StudentKind],
    *,
    split: str = "test",
) -> list[dict[str, Any]]:
    """Train and evaluate the grid; write ``scaling.json`` into ``base.output_dir``."""
    if not sizes:
        raise ValueError("sizes: give at least one augmented-set size")
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        grid: list[int | None] = [None, *sorted(set(sizes))]
        for size in grid:
            label = "human-only" if size is None else f"augmented-{size}"
            config = base.model_copy(
                update={
                    "kind": kind,
                    "use_teacher_labels": size is not None,
                    "augmented_queries": size,
                    "output_dir": base.output_dir / f"{kind}-{label}",
                    "name": f"{base.name}-{kind}-{label}",
                }
            )
            result = train(config)
            scores = evaluate_scorer(load_student(config.output_dir), config.dataset_dir, split)
            rows.append(
                {
                    "kind": str(kind),
                    "augmented_queries": size or 0,
                    "teacher_queries": result.teacher_queries,
                    "human_queries": result.human_queries,
                    "steps": result.steps,
                    "dev_ndcg@10": result.best_dev_ndcg10,
                    f"{split}_ndcg@10": scores["ndcg@10"],
                    f"{split}_ndcg_esci@10": scores["ndcg_esci@10"],
                    "pairs_per_s": result.pairs_per_s,
                    "checkpoint": str(config.output_dir),
                }
            )
            base.output_dir.mkdir(parents=True, exist_ok=True)
            (base.output_dir / RESULTS_JSON).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def markdown_table(rows: list[dict[str, Any]], split: str = "test") -> str:
    lines = [
        f"| kind | teacher-labeled queries | human queries | dev NDCG@10 | {split} NDCG@10 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['kind']} | {r['teacher_queries']} | {r['human_queries']} | "
        f"{r['dev_ndcg@10']:.4f} | {r[f'{split}_ndcg@10']:.4f} |"
        for r in rows
    ]
    return "\n".join(lines)
