"""Dev-split metrics the teacher trainer selects and calibrates on."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from training.data.schema import NUM_GRADES
from training.teacher.data import JudgedPair

GRADES = np.arange(NUM_GRADES, dtype=np.float64)


def ndcg_at_k(groups: dict[str, list[tuple[float, int]]], k: int = 10) -> float:
    """Mean NDCG@k over queries of (score, gold grade) lists; gain 2^grade - 1.

    Ties in score are broken by the worse gold grade first, so a constant scorer gets no
    credit from the input order.
    """
    values = []
    for items in groups.values():
        gains = np.array([2.0**grade - 1 for _, grade in items])
        ideal = np.sort(gains)[::-1][:k]
        discounts = 1.0 / np.log2(np.arange(2, len(ideal) + 2))
        best = float((ideal * discounts).sum())
        if best == 0:
            continue
        ranked = sorted(items, key=lambda item: (-item[0], item[1]))[:k]
        got = float(sum((2.0**g - 1) * d for (_, g), d in zip(ranked, discounts, strict=False)))
        values.append(got / best)
    return float(np.mean(values)) if values else 0.0


def grade_metrics(
    pairs: Sequence[JudgedPair], logits: torch.Tensor, targets: torch.Tensor
) -> dict[str, float]:
    """NDCG@10 of the expected grade, accuracy vs the gold grade, soft NLL and 10-bin ECE."""
    probs = torch.softmax(logits.float(), dim=-1).numpy().astype(np.float64)
    expected = probs @ GRADES
    groups: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for pair, score in zip(pairs, expected, strict=True):
        groups[pair.query_id].append((float(score), pair.grade))
    gold = np.array([pair.grade for pair in pairs])
    predicted = probs.argmax(-1)
    confidence = probs.max(-1)
    correct = (predicted == gold).astype(np.float64)
    bins = np.minimum((confidence * 10).astype(int), 9)
    ece = sum(
        abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
        for b in range(10)
        if (bins == b).any()
    )
    nll = float(-(targets.numpy() * np.log(np.clip(probs, 1e-12, None))).sum(-1).mean())
    return {
        "ndcg@10": ndcg_at_k(groups),
        "accuracy": float(correct.mean()),
        "nll": nll,
        "ece": float(ece),
    }
