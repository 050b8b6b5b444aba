from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.candidate_generation.index import CatalogIndex
from services.candidate_generation.queries import (
    LOG,
    SIMULATOR,
    SYNTHETIC,
    QueryRecord,
    query_id_for,
    read_query_log,
    simulator_queries,
    synthetic_queries,
    synthetic_query,
    unreached_products,
)
from training.data import storage


def test_query_ids_ignore_case_and_spacing() -> None:
    assert query_id_for("Red  Sofa ") == query_id_for("red sofa")
    assert query_id_for("red sofa") != query_id_for("red sofas")


def test_read_plain_and_jsonl_logs(tmp_path: Path) -> None:
    plain = tmp_path / "log.txt"
    plain.write_text("red sofa\n\nRed Sofa\noak table\n")
    records = read_query_log(plain)
    assert [r.query for r in records] == ["red sofa", "oak table"]
    assert all(r.source == LOG for r in records)
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text('{"query": "lamp", "query_id": "q7"}\n{"query": "rug"}\n')
    assert [(r.query_id, r.query) for r in read_query_log(jsonl)] == [
        ("q7", "lamp"),
        (query_id_for("rug"), "rug"),
    ]


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"query": "lamp"}\n{"query_id": "q2"}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2: field 'query'"):
        read_query_log(path)


def test_simulator_queries_reads_one_split(tmp_path: Path) -> None:
    storage.write_manifest(tmp_path, source="test")
    storage.write_table(
        tmp_path,
        "queries",
        [
            {"query_id": "a", "query": "red sofa", "split": "train"},
            {"query_id": "b", "query": "oak lamp", "split": "unlabeled"},
        ],
    )
    assert simulator_queries(tmp_path) == [QueryRecord("b", "oak lamp", SIMULATOR)]
    with pytest.raises(ValueError, match="splits"):
        simulator_queries(tmp_path, ["holdout"])


def test_synthetic_queries_are_written_from_the_product(catalog: list[dict[str, Any]]) -> None:
    rng = np.random.default_rng(0)
    for product in catalog[:30]:
        query = synthetic_query(product, rng)
        words = set(query.split())
        vocabulary = set(
            " ".join(
                [product["title"].lower(), product["product_type"] + "s", "best cheap in"]
            ).split()
        )
        assert words <= vocabulary, (query, product["title"])
        assert query.split()[-1].startswith(product["product_type"].split()[-1]) or (
            product["product_type"] in query
        )
    records = synthetic_queries(catalog, per_product=2, seed=1)
    assert all(r.source == SYNTHETIC for r in records)
    assert len({r.query for r in records}) == len(records)


def test_unreached_products_are_those_no_query_retrieves(index: CatalogIndex) -> None:
    queries = [QueryRecord("q", "sofa", LOG)]
    unreached = set(unreached_products(index, queries, depth=10))
    reached = {h.product_id for h in index.search("sofa", 10)}
    assert unreached == set(index.product_ids()) - reached
    assert len(unreached) == 80
