"""Fixtures: a tiny random BERT (MiniLM's tokenizer) and a tiny dataset on disk.

The dataset's grades follow a rule the model can learn from the text: a product is
Exact when its title names the query's product type and brand, Substitute for the
type alone, Irrelevant otherwise.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from contracts import schema
from training.data.storage import write_manifest, write_table
from training.student.config import StudentTrainConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TYPES = ["sofa", "lamp", "desk", "rug", "chair", "mirror"]
BRANDS = ["acme", "zenith", "nova"]


def _grade(query_type: str, query_brand: str, product_type: str, brand: str) -> int:
    if product_type != query_type:
        return int(schema.Grade.IRRELEVANT)
    return int(schema.Grade.EXACT if brand == query_brand else schema.Grade.SUBSTITUTE)


def _probs(grade: int) -> list[float]:
    probs = np.full(schema.NUM_GRADES, 0.05, dtype=np.float32)
    probs[grade] = 0.85
    return (probs / probs.sum()).tolist()


def _teacher_rationale(truth: dict[str, int], stated: bool) -> dict[str, object]:
    """What the label store keeps of a teacher label's rationale: a classifier teacher
    with rationale heads gives a distribution per field (most mass on the true value)
    and its argmax; a teacher without heads gives nulls (missing, not NOT_STATED)."""
    columns: dict[str, object] = {}
    for field, probs_field in zip(
        schema.RATIONALE_FIELDS, schema.RATIONALE_PROBS_FIELDS, strict=True
    ):
        if not stated:
            columns[field], columns[probs_field] = None, None
            continue
        probs = np.full(schema.NUM_MATCH, 0.1, dtype=np.float32)
        probs[truth[field]] = 0.8
        columns[field], columns[probs_field] = truth[field], probs.tolist()
    return columns


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 queries (type x brand): 8 train, 4 dev, 2 test, 4 unlabeled with teacher labels
    (rationale distributions on three of them, none on the last)."""
    root = tmp_path_factory.mktemp("dataset")
    products = [
        {"product_id": f"p-{t}-{b}", "title": f"{b} {t}", "product_type": t, "brand": b}
        for t, b in itertools.product(TYPES, BRANDS)
    ]
    splits = ["train"] * 8 + ["dev"] * 4 + ["test"] * 2 + ["unlabeled"] * 4
    queries = [
        {"query_id": f"q{i}", "query": f"{b} {t}", "split": splits[i]}
        for i, (t, b) in enumerate(itertools.product(TYPES, BRANDS))
    ]
    judgments, labels = [], []
    for i, (t, b) in enumerate(itertools.product(TYPES, BRANDS)):
        for p in products:
            grade = _grade(t, b, p["product_type"], p["brand"])
            rationale = {
                "category_match": int(
                    schema.Match.MATCH if p["product_type"] == t else schema.Match.MISMATCH
                ),
                "brand_match": int(
                    schema.Match.MATCH if p["brand"] == b else schema.Match.MISMATCH
                ),
                "attribute_match": int(schema.Match.NOT_STATED),
            }
            row = {"query_id": f"q{i}", "product_id": p["product_id"]}
            if splits[i] == "unlabeled":
                probs = _probs(grade)
                labels.append(
                    {
                        **row,
                        **_teacher_rationale(rationale, stated=i != len(splits) - 1),
                        "query": f"{b} {t}",
                        "grade_probs": probs,
                        "expected_score": float(np.dot(probs, np.arange(4))),
                        "teacher_model": "fixture",
                        "teacher_version": "1",
                    }
                )
            else:
                judgments.append(
                    {
                        **row,
                        **rationale,
                        "grade": grade,
                        "grade_probs": _probs(grade),
                        "num_raters": 3,
                    }
                )
    # The teacher also labeled a dev query: training must not see it.
    labels.append({**labels[0], "query_id": "q8"})
    write_manifest(root, source="test-fixture", seed=0)
    write_table(root, "products", products)
    write_table(root, "queries", queries)
    write_table(root, "judgments", judgments)
    write_table(root, "teacher_labels", labels)
    return root


@pytest.fixture
def tiny_config(tiny_dataset: Path, tiny_base_model: str, tmp_path: Path) -> StudentTrainConfig:
    return StudentTrainConfig(
        dataset_dir=tiny_dataset,
        output_dir=tmp_path / "student",
        base_model=tiny_base_model,
        num_layers=1,
        max_length=16,
        freeze_embeddings=True,
        queries_per_batch=4,
        pairs_per_query=4,
        max_steps=6,
        eval_every=3,
        lr=1e-3,
        progress=False,
    )
