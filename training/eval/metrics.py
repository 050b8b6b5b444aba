"""Ranking and classification metrics over TREC-style qrels and runs.

``qrels``: ``{query_id: {doc_id: grade}}`` with grades 0..3 (ESCI scale).
``run``:   ``{query_id: {doc_id: score}}``, higher is better.

Ranking follows trec_eval: documents sorted by score descending, ties broken by
doc id descending, so results agree with trec_eval / ir-measures (which the tests
cross-check). Query-level values are averaged over queries present in both qrels and
run; a query with no positive gain scores 0, as in trec_eval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

# Gains per grade: linear in the grade, and the ESCI paper's E=1, S=0.1, C=0.01, I=0.
GRADED_GAINS: dict[int, float] = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
ESCI_GAINS: dict[int, float] = {0: 0.0, 1: 0.01, 2: 0.1, 3: 1.0}


def ranking(scores: Mapping[str, float]) -> list[str]:
    """Doc ids best first (score descending, then doc id descending, as trec_eval)."""
    return [d for d, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def _common(qrels: Qrels, run: Run) -> list[str]:
    return sorted(q for q in run if q in qrels)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def ndcg_per_query(
    qrels: Qrels, run: Run, k: int = 10, gains: Mapping[int, float] = GRADED_GAINS
) -> dict[str, float]:
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    out = {}
    for q in _common(qrels, run):
        judged = qrels[q]
        ranked = ranking(run[q])[:k]
        discounts = 1.0 / np.log2(np.arange(2, k + 2))
        dcg = sum(gains.get(judged.get(d, 0), 0.0) * discounts[i] for i, d in enumerate(ranked))
        ideal = sorted((gains.get(g, 0.0) for g in judged.values()), reverse=True)[:k]
        idcg = float(np.dot(ideal, discounts[: len(ideal)]))
        out[q] = dcg / idcg if idcg > 0 else 0.0
    return out


def ndcg(qrels: Qrels, run: Run, k: int = 10, gains: Mapping[int, float] = GRADED_GAINS) -> float:
    """Mean NDCG@k with the given gain per grade."""
    return _mean(list(ndcg_per_query(qrels, run, k, gains).values()))


def mrr(qrels: Qrels, run: Run, relevant_grade: int = 3) -> float:
    """Mean reciprocal rank of the first document graded ``>= relevant_grade``."""
    values = []
    for q in _common(qrels, run):
        rank = next(
            (i + 1 for i, d in enumerate(ranking(run[q])) if qrels[q].get(d, 0) >= relevant_grade),
            None,
        )
        values.append(1.0 / rank if rank else 0.0)
    return _mean(values)


def mean_average_precision(qrels: Qrels, run: Run, relevant_grade: int = 3) -> float:
    """MAP with documents graded ``>= relevant_grade`` relevant."""
    values = []
    for q in _common(qrels, run):
        relevant = {d for d, g in qrels[q].items() if g >= relevant_grade}
        hits, precision_sum = 0, 0.0
        for i, d in enumerate(ranking(run[q])):
            if d in relevant:
                hits += 1
                precision_sum += hits / (i + 1)
        values.append(precision_sum / len(relevant) if relevant else 0.0)
    return _mean(values)


def pairwise_accuracy(qrels: Qrels, run: Run) -> float:
    """Share of same-query pairs with different grades that the scores order correctly
    (ties count half), averaged over queries that have such pairs."""
    values = []
    for q in _common(qrels, run):
        docs = [d for d in run[q] if d in qrels[q]]
        grades = np.array([qrels[q][d] for d in docs], dtype=float)
        scores = np.array([run[q][d] for d in docs], dtype=float)
        dg = np.sign(grades[:, None] - grades[None, :])
        ds = np.sign(scores[:, None] - scores[None, :])
        mask = dg > 0
        if mask.any():
            values.append(float(((ds[mask] > 0) + 0.5 * (ds[mask] == 0)).mean()))
    return _mean(values)


def grade_accuracy(true_grades: Sequence[int], predicted_grades: Sequence[int]) -> float:
    return float(accuracy_score(true_grades, predicted_grades))


def grade_macro_f1(
    true_grades: Sequence[int], predicted_grades: Sequence[int], num_grades: int = 4
) -> float:
    """Macro-F1 over all grades (a grade absent from both sides counts as F1 = 0)."""
    return float(
        f1_score(
            true_grades,
            predicted_grades,
            labels=list(range(num_grades)),
            average="macro",
            zero_division=0,
        )
    )


def rank_correlation(run: Run, reference: Run) -> dict[str, float]:
    """Mean per-query Spearman rho and Kendall tau-b of ``run`` against ``reference``
    (e.g. the teacher's expected grades) over the documents both score."""
    rhos, taus = [], []
    for q in sorted(set(run) & set(reference)):
        docs = sorted(set(run[q]) & set(reference[q]))
        if len(docs) < 3:
            continue
        a = [run[q][d] for d in docs]
        b = [reference[q][d] for d in docs]
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            continue
        rhos.append(stats.spearmanr(a, b).statistic)
        taus.append(stats.kendalltau(a, b).statistic)
    return {"spearman": _mean(rhos), "kendall": _mean(taus), "queries": float(len(rhos))}
