"""Controller tests: a catalog whose grades follow the text, a label store, a tiny BERT.

Grades: Exact when a product has the query's type and brand, Substitute for the type
alone, Irrelevant otherwise, so a student that reads titles can learn them in a few
dozen steps and one trained on shuffled labels cannot.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from contracts import schema
from services.label_store.writer import LABELS_KIND, PRODUCTS_KIND, cut_snapshot, write_incoming
from training.data.storage import write_manifest, write_table
from training.student.config import StudentTrainConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TYPES = ["sofa", "lamp", "desk", "rug", "chair", "mirror", "shelf", "stool"]
BRANDS = ["acme", "zenith", "nova", "orbit"]
NEW_BRANDS = ["kappa", "lumen"]  # enter the catalog through the label store


def grade(query_type: str, query_brand: str, product_type: str, brand: str) -> int:
    if product_type != query_type:
        return int(schema.Grade.IRRELEVANT)
    return int(schema.Grade.EXACT if brand == query_brand else schema.Grade.SUBSTITUTE)


def probs(g: int) -> list[float]:
    p = np.full(schema.NUM_GRADES, 0.04, dtype=np.float32)
    p[g] = 0.88
    return (p / p.sum()).tolist()


def product(t: str, b: str) -> dict:
    return {"product_id": f"p-{t}-{b}", "title": f"{b} {t}", "product_type": t, "brand": b}


def write_dataset(root: Path, *, shuffle_seed: int | None = None) -> Path:
    """32 products, 32 queries (16 train, 6 dev, 10 test), every pair judged; with
    `shuffle_seed` the train grades are permuted across pairs (a deliberately bad set)."""
    products = [product(t, b) for t, b in itertools.product(TYPES, BRANDS)]
    splits = (["train"] * 16) + (["dev"] * 6) + (["test"] * 10)
    pairs = list(itertools.product(TYPES, BRANDS))
    order = np.random.default_rng(7).permutation(len(pairs))
    queries = [
        {"query_id": f"q{i}", "query": f"{pairs[j][1]} {pairs[j][0]}", "split": splits[i]}
        for i, j in enumerate(order)
    ]
    judgments = []
    for q, j in zip(queries, order, strict=True):
        t, b = pairs[j]
        for p in products:
            g = grade(t, b, p["product_type"], p["brand"])
            judgments.append(
                {
                    "query_id": q["query_id"],
                    "product_id": p["product_id"],
                    "grade": g,
                    "grade_probs": probs(g),
                    "num_raters": 3,
                }
            )
    if shuffle_seed is not None:
        train = [i for i, r in enumerate(judgments) if splits[int(r["query_id"][1:])] == "train"]
        permuted = np.random.default_rng(shuffle_seed).permutation(train)
        grades = [(judgments[i]["grade"], judgments[i]["grade_probs"]) for i in permuted]
        for i, (g, p) in zip(train, grades, strict=True):
            judgments[i]["grade"], judgments[i]["grade_probs"] = g, p
    write_manifest(root, source="controller-test-fixture", seed=0)
    write_table(root, "products", products)
    write_table(root, "queries", queries)
    write_table(root, "judgments", judgments)
    return root


@pytest.fixture(scope="session")
def human_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("controller") / "dataset")


def add_traffic_labels(store: Path, brands: list[str], first_query: int, at_ns: int) -> str:
    """Teacher labels of traffic queries naming `brands` (new products included) and a
    snapshot cut over them; returns the snapshot id."""
    new_products = [product(t, b) for t, b in itertools.product(TYPES, brands)]
    write_incoming(store, PRODUCTS_KIND, [{**p, "produced_at_ns": at_ns} for p in new_products])
    catalog = [product(t, b) for t, b in itertools.product(TYPES, BRANDS + brands)]
    rows = []
    for n, (t, b) in enumerate(itertools.product(TYPES, brands)):
        qid = f"traffic-{first_query + n}"
        # Every product of the query's type (exact and substitutes) and a few others.
        judged = {p["product_id"]: p for p in catalog if p["product_type"] == t}
        judged.update({p["product_id"]: p for p in catalog[::7]})
        for p in judged.values():
            g = grade(t, b, p["product_type"], p["brand"])
            pr = probs(g)
            rows.append(
                {
                    "query_id": qid,
                    "query": f"{b} {t}",
                    "product_id": p["product_id"],
                    "grade_probs": pr,
                    "expected_score": float(np.dot(pr, np.arange(4))),
                    "teacher_model": "fixture-teacher",
                    "teacher_version": "1",
                    # A teacher without rationale heads: the store keeps them null.
                    "category_match": None,
                    "brand_match": None,
                    "attribute_match": None,
                    "pair_key": f"{qid}|{p['product_id']}",
                    "produced_at_ns": at_ns + n,
                }
            )
    write_incoming(store, LABELS_KIND, rows)
    snapshot = cut_snapshot(store, reason="test")
    assert snapshot is not None
    return snapshot.id


def tiny_student(dataset: Path, output: Path, base_model: str, **update) -> StudentTrainConfig:
    fields = {
        "base_model": base_model,
        "num_layers": 2,
        "max_length": 16,
        "freeze_embeddings": False,
        "queries_per_batch": 4,
        "pairs_per_query": 4,
        "max_steps": 40,
        "eval_every": 20,
        "lr": 2e-3,
        "progress": False,
        "torch_threads": 1,
        **update,
    }
    return StudentTrainConfig(dataset_dir=dataset, output_dir=output, **fields)
