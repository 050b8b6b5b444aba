"""Dev-split metrics the teacher trainer selects and calibrates on.

NDCG@10 comes from ``training.eval.metrics`` so the number the trainer early-stops on
is the one ``relkd eval`` reports.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from contracts.schema import NUM_GRADES
from training.eval.metrics import ndcg
from training.teacher.data import JudgedPair

GRADES = np.arange(NUM_GRADES, dtype=np.float64)
ECE_BINS = 10


def grade_metrics(
    pairs: Sequence[JudgedPair], logits: torch.Tensor, targets: torch.Tensor
) -> dict[str, float]:
    """NDCG@10 of the expected grade, accuracy vs the gold grade, soft NLL and ECE."""
    probs = torch.softmax(logits.double(), dim=-1).numpy()
    expected = probs @ GRADES
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    run: dict[str, dict[str, float]] = defaultdict(dict)
    for pair, score in zip(pairs, expected, strict=True):
        qrels[pair.query_id][pair.product["product_id"]] = pair.grade
        run[pair.query_id][pair.product["product_id"]] = float(score)
    gold = np.array([pair.grade for pair in pairs])
    confidence = probs.max(-1)
    correct = (probs.argmax(-1) == gold).astype(np.float64)
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    ece = sum(
        abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
        for b in range(ECE_BINS)
        if (bins == b).any()
    )
    nll = float(-(targets.double().numpy() * np.log(np.clip(probs, 1e-12, None))).sum(-1).mean())
    return {
        "ndcg@10": ndcg(qrels, run, k=10),
        "accuracy": float(correct.mean()),
        "nll": nll,
        "ece": float(ece),
    }
