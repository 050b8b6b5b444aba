"""Score a dataset split with any ``Scorer`` and report every metric in one dict."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from rich.progress import Progress

from training.data import storage
from training.eval import metrics
from training.eval.scorer import GradeScorer, Scorer


@dataclass(frozen=True)
class SplitEvaluation:
    """Every metric of a split, and the per-query values of the NDCG metrics.

    ``per_query[metric][query_id]`` for each ``ndcg@k`` and ``ndcg_esci@k``: what
    bootstrap intervals over test queries resample (``training.eval.intervals``).
    """

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]


def evaluate_scorer(
    scorer: Scorer,
    dataset_dir: Path | str,
    split: str = "test",
    ks: Sequence[int] = (5, 10),
    relevant_grade: int = 3,
    batch_size: int = 256,
    max_queries: int | None = None,
    show_progress: bool = False,
) -> dict[str, float]:
    """Every metric of :func:`evaluate_split`, averaged over the split's queries."""
    return evaluate_split(
        scorer, dataset_dir, split, ks, relevant_grade, batch_size, max_queries, show_progress
    ).metrics


def evaluate_split(
    scorer: Scorer,
    dataset_dir: Path | str,
    split: str = "test",
    ks: Sequence[int] = (5, 10),
    relevant_grade: int = 3,
    batch_size: int = 256,
    max_queries: int | None = None,
    show_progress: bool = False,
) -> SplitEvaluation:
    """Re-rank each judged query's pool with ``scorer`` and compute the metrics.

    Reports ``ndcg@k`` (graded gains 0..3), ``ndcg_esci@k`` (E=1, S=0.1, C=0.01, I=0),
    ``mrr`` and ``map`` (relevant: grade >= ``relevant_grade``), ``pairwise_accuracy``;
    ``grade_accuracy`` / ``grade_macro_f1`` when the scorer has ``grade_probs``; and
    ``spearman_teacher`` / ``kendall_teacher`` when the dataset has teacher labels.
    """
    queries = storage.read_table(dataset_dir, "queries", ["query_id", "query"], split)
    if max_queries is not None:
        queries = queries.slice(0, max_queries)
    text = dict(
        zip(
            queries.column("query_id").to_pylist(), queries.column("query").to_pylist(), strict=True
        )
    )
    judgments = storage.read_table(
        dataset_dir, "judgments", ["query_id", "product_id", "grade"], split
    )
    judgments = judgments.filter(pc.is_in(judgments.column("query_id"), queries.column("query_id")))
    if judgments.num_rows == 0:
        raise ValueError(f"dataset {dataset_dir} has no judgments in split {split!r}")
    qids = judgments.column("query_id").to_pylist()
    pids = judgments.column("product_id").to_pylist()
    grades = judgments.column("grade").to_numpy()
    wanted = judgments.column("product_id").unique()
    products = storage.read_table(dataset_dir, "products")
    products = products.filter(pc.is_in(products.column("product_id"), wanted))
    by_id = {p["product_id"]: p for p in products.to_pylist()}
    missing = sorted(set(pids) - set(by_id))
    if missing:
        raise ValueError(f"judgments reference product_ids missing from products: {missing[:5]}")

    n = len(qids)
    scores = np.empty(n, dtype=np.float64)
    probs = np.empty((n, 4)) if isinstance(scorer, GradeScorer) else None
    with Progress(disable=not show_progress) as progress:
        task = progress.add_task(f"scoring with {scorer.name}", total=n)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch_q = [text[q] for q in qids[start:stop]]
            batch_p = [by_id[p] for p in pids[start:stop]]
            if probs is None:
                scores[start:stop] = scorer.score_pairs(batch_q, batch_p)
            else:
                scores[start:stop], probs[start:stop] = scorer.score_and_grade_probs(
                    batch_q, batch_p
                )
            progress.update(task, completed=stop)

    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    run: dict[str, dict[str, float]] = defaultdict(dict)
    for q, p, g, s in zip(qids, pids, grades.tolist(), scores.tolist(), strict=True):
        qrels[q][p] = g
        run[q][p] = s
    result: dict[str, float] = {}
    per_query: dict[str, dict[str, float]] = {}
    for k in ks:
        for name, gains in (
            (f"ndcg@{k}", metrics.GRADED_GAINS),
            (f"ndcg_esci@{k}", metrics.ESCI_GAINS),
        ):
            per_query[name] = metrics.ndcg_per_query(qrels, run, k, gains)
            result[name] = float(np.mean(list(per_query[name].values())))
    result["mrr"] = metrics.mrr(qrels, run, relevant_grade)
    result["map"] = metrics.mean_average_precision(qrels, run, relevant_grade)
    result["pairwise_accuracy"] = metrics.pairwise_accuracy(qrels, run)
    if probs is not None:
        predicted = probs.argmax(axis=1)
        result["grade_accuracy"] = metrics.grade_accuracy(grades, predicted)
        result["grade_macro_f1"] = metrics.grade_macro_f1(grades, predicted)
    teacher = _teacher_run(dataset_dir, split)
    if teacher:
        corr = metrics.rank_correlation(run, teacher)
        if corr["queries"]:
            result["spearman_teacher"] = corr["spearman"]
            result["kendall_teacher"] = corr["kendall"]
    result["num_queries"] = float(len(qrels))
    result["num_pairs"] = float(n)
    return SplitEvaluation(result, per_query)


def _teacher_run(dataset_dir: Path | str, split: str) -> dict[str, dict[str, float]]:
    if not storage.has_table(dataset_dir, "teacher_labels"):
        return {}
    labels = storage.read_table(
        dataset_dir, "teacher_labels", ["query_id", "product_id", "expected_score"], split
    )
    run: dict[str, dict[str, float]] = defaultdict(dict)
    for q, p, s in zip(
        labels.column("query_id").to_pylist(),
        labels.column("product_id").to_pylist(),
        labels.column("expected_score").to_pylist(),
        strict=True,
    ):
        run[q][p] = s
    return run
