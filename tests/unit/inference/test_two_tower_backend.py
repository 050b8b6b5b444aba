"""The two-tower backend in-process: its ONNX Runtime query towers (fp32 and the
per-channel int8 one) score like the torch checkpoint, the truncation count read
from the product token cache equals the tokenizer's count, and the query embedding
cache changes no score."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from relevance.v1 import student_inference_pb2
from scipy.stats import spearmanr
from tokenizers import Tokenizer

from contracts.artifacts import EXPORT_TOKENIZER
from services.student_inference.backends import TwoTowerBackend, TwoTowerSettings
from training.export.exporter import export_student
from training.student.checkpoint import load_student

QUERIES = ["grey sofa", "oak writing desk with drawers", "lamp"]
PRODUCTS = [
    {"product_id": f"p{i}", "title": title, "brand": brand}
    for i, (title, brand) in enumerate(
        [
            ("grey fabric sofa", "acme"),
            ("oak desk", ""),
            ("floor lamp", "nova"),
            ("wool rug", "zenith"),
            ("office chair with armrests", "acme"),
        ]
    )
]


@pytest.fixture(scope="module")
def two_tower_export(
    tmp_path_factory: pytest.TempPathFactory, two_tower_checkpoint: Path, products_parquet: Path
) -> Path:
    export_dir = tmp_path_factory.mktemp("two-tower-export")
    export_student(two_tower_checkpoint, export_dir, int8=True, products=products_parquet)
    return export_dir


@pytest.mark.parametrize("int8", [False, True])
def test_query_towers_score_like_the_torch_checkpoint(
    two_tower_export: Path, two_tower_checkpoint: Path, int8: bool
) -> None:
    backend = TwoTowerBackend(
        TwoTowerSettings(student_export_dir=two_tower_export, query_tower_int8=int8)
    )
    student = load_student(two_tower_checkpoint, device="cpu")
    products = [student_inference_pb2.ScoreProduct(**row) for row in PRODUCTS]
    for query in QUERIES:
        served = np.array(backend.score_blocking(query, products).scores)
        expected = student.score_pairs([query] * len(PRODUCTS), PRODUCTS)
        if int8:
            # Per-channel int8 keeps the ranking of the products.
            assert spearmanr(served, expected).statistic > 0.95
            np.testing.assert_allclose(served, expected, atol=0.15)
        else:
            np.testing.assert_allclose(served, expected, atol=1e-4)


def test_truncation_count_from_cached_tokens_equals_the_tokenizers(
    two_tower_export: Path,
) -> None:
    backend = TwoTowerBackend(TwoTowerSettings(student_export_dir=two_tower_export))
    policy = backend.policy
    tokenizer = Tokenizer.from_file(str(two_tower_export / EXPORT_TOKENIZER))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    rng = np.random.default_rng(0)
    words = ["grey", "sofa", "oak", "desk", "linen", "three-seat", "ünïcode", "(2-pack)"]
    # Around the limit: the max_length 32 includes [CLS] and [SEP].
    texts = [" ".join(rng.choice(words, size=n)) for n in range(0, 40, 3)]
    ids = [f"t{i}" for i in range(len(texts))]
    expected = sum(len(e.ids) > policy.max_length for e in tokenizer.encode_batch(texts))
    assert 0 < expected < len(texts)
    assert sum(policy.truncated_texts(ids, texts)) == expected
    assert policy.products.misses == len(texts)
    # Cached: counted again without tokenizing; an edited product is re-tokenized.
    assert sum(policy.truncated_texts(ids, texts)) == expected
    assert policy.products.misses == len(texts)
    longest = texts.index(max(texts, key=len))
    edited = [*texts]
    edited[longest] = "oak desk"
    assert sum(policy.truncated_texts(ids, edited)) == expected - 1
    assert policy.products.misses == len(texts) + 1


def test_score_counts_the_requests_texts_and_recounts_a_changed_one(
    two_tower_export: Path,
) -> None:
    backend = TwoTowerBackend(TwoTowerSettings(student_export_dir=two_tower_export))
    long_title = " ".join(["three-seat linen sofa"] * 12)  # far past max_length 32

    def truncated(title: str) -> int:
        products = [student_inference_pb2.ScoreProduct(**row) for row in PRODUCTS]
        products[0].title = title
        return backend.score_blocking("sofa", products).truncated

    assert truncated(PRODUCTS[0]["title"]) == 0
    # Memoised per product id, but the count follows the request's current text.
    assert truncated(long_title) == 1
    assert truncated(long_title) == 1
    assert truncated(PRODUCTS[0]["title"]) == 0


def test_query_embedding_cache_hits_return_the_towers_embedding(two_tower_export: Path) -> None:
    cached = TwoTowerBackend(
        TwoTowerSettings(student_export_dir=two_tower_export, query_embedding_cache_size=2)
    )
    uncached = TwoTowerBackend(
        TwoTowerSettings(student_export_dir=two_tower_export, query_embedding_cache_size=0)
    )
    assert cached.query_cache is not None and uncached.query_cache is None
    products = [student_inference_pb2.ScoreProduct(**row) for row in PRODUCTS]
    hits = REGISTRY.get_sample_value("relkd_query_embedding_cache_total", {"outcome": "hit"}) or 0
    # The uncased tokenizer reads these as the same query: one entry, one miss.
    for query in ["grey sofa", "Grey  SOFA ", "grey sofa"]:
        assert (
            cached.score_blocking(query, products).scores
            == uncached.score_blocking(query, products).scores
        )
    assert (cached.query_cache.hits, cached.query_cache.misses) == (2, 1)
    assert (
        REGISTRY.get_sample_value("relkd_query_embedding_cache_total", {"outcome": "hit"})
        == hits + 2
    )
    # Least recently used goes first: "lamp" evicts "oak desk", not the reused "grey sofa".
    for query in ["oak desk", "grey sofa", "lamp", "grey sofa", "oak desk"]:
        cached.embed_query(query)
    assert (cached.query_cache.hits, cached.query_cache.misses) == (4, 4)
    assert len(cached.query_cache) == 2
    with pytest.raises(ValueError):
        cached.embed_query("grey sofa")[0] = 0.0  # shared by every hit: read-only


@pytest.mark.parametrize("inline", [True, False])
def test_score_inline_or_in_a_worker_thread_scores_alike(
    two_tower_export: Path, inline: bool
) -> None:
    backend = TwoTowerBackend(
        TwoTowerSettings(student_export_dir=two_tower_export, query_tower_inline=inline)
    )
    products = [student_inference_pb2.ScoreProduct(**row) for row in PRODUCTS]
    result = asyncio.run(backend.score("oak writing desk", products, timeout_s=None))
    assert result.scores == backend.score_blocking("oak writing desk", products).scores
