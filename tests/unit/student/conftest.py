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


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 queries (type x brand): 8 train, 4 dev, 2 test, 4 unlabeled with teacher labels."""
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
                "category_match": int(schema.Match.MATCH if p["product_type"] == t else 2),
                "brand_match": int(schema.Match.MATCH if p["brand"] == b else 2),
                "attribute_match": int(schema.Match.NOT_STATED),
            }
            row = {"query_id": f"q{i}", "product_id": p["product_id"], **rationale}
            if splits[i] == "unlabeled":
                probs = _probs(grade)
                labels.append(
                    {
                        **row,
                        "query": f"{b} {t}",
                        "grade_probs": probs,
                        "expected_score": float(np.dot(probs, np.arange(4))),
                        "teacher_model": "fixture",
                        "teacher_version": "1",
                    }
                )
            else:
                judgments.append(
                    {**row, "grade": grade, "grade_probs": _probs(grade), "num_raters": 3}
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
