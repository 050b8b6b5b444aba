"""Pair rows assembled from cached product ids equal the HF tokenizer's, truncation included."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from transformers import PreTrainedTokenizerBase

from training.export.triton_models.pair_tokens import (
    INPUT_ARRAYS,
    PairAssembler,
    ProductTokenCache,
    request_rows,
)

WORDS = [
    "grey", "sofa", "oak", "desk", "floor", "lamp", "linen", "shade", "three-seat",
    "fabric", "running", "shoes", "waterproof", "ünïcode", "42cm", "x-large", "(2-pack)",
    "USB-C", "charger", "café", '1/2"', "hex",
]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer_json(
    tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer: PreTrainedTokenizerBase
) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    minilm_tokenizer.save_pretrained(directory)
    return directory / "tokenizer.json"


def _text(rng: random.Random, longest: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, longest)))


@pytest.mark.parametrize("max_length", [8, 17, 32, 64])
def test_assembled_rows_equal_the_tokenizers_pairs(
    tokenizer_json: Path, minilm_tokenizer: PreTrainedTokenizerBase, max_length: int
) -> None:
    assembler = PairAssembler(str(tokenizer_json), max_length, minilm_tokenizer.pad_token_id)
    cache = ProductTokenCache(assembler)
    rng = random.Random(max_length)
    truncated_pairs = query_long = product_long = compared = 0
    for request in range(40):
        # Short queries with long products, long queries with short products, both long.
        query = _text(rng, [3, 40, 25][request % 3])
        texts = [_text(rng, [50, 4, 30][request % 3]) for _ in range(rng.randint(1, 8))]
        ids = [f"p{rng.randint(0, 30)}-{i}" for i in range(len(texts))]
        expected = minilm_tokenizer(
            [query] * len(texts),
            texts,
            truncation="longest_first",
            max_length=max_length,
            padding=True,
            return_tensors="np",
        )
        (query_encoding,) = assembler.encode([query])
        products = cache.get(ids, texts)
        rows = assembler.assemble(query_encoding.ids, products)
        for name in INPUT_ARRAYS:
            np.testing.assert_array_equal(rows[name], expected[name], err_msg=name)
        full = minilm_tokenizer([query] * len(texts), texts)["input_ids"]
        for product, row in zip(products, full, strict=True):
            truncated = len(row) > max_length
            assert assembler.is_truncated(len(query_encoding.ids), product) == truncated
            truncated_pairs += truncated
            q, p = len(query_encoding.ids), product.full_length
            query_long += truncated and q > p
            product_long += truncated and p > q
        compared += len(texts)
    assert compared >= 100
    assert truncated_pairs and query_long and product_long


def test_cache_tokenizes_each_product_once_and_re_tokenizes_a_changed_text(
    tokenizer_json: Path, minilm_tokenizer: PreTrainedTokenizerBase
) -> None:
    assembler = PairAssembler(str(tokenizer_json), 32, minilm_tokenizer.pad_token_id)
    cache = ProductTokenCache(assembler, capacity=2)
    first = cache.get(["a", "b"], ["oak desk", "grey sofa"])
    assert (cache.hits, cache.misses) == (0, 2)
    again = cache.get(["a", "b"], ["oak desk", "grey sofa"])
    assert (cache.hits, cache.misses) == (2, 2)
    assert again[0] is first[0] and again[1] is first[1]

    changed = cache.get(["a"], ["walnut desk"])
    assert (cache.hits, cache.misses) == (2, 3)
    assert (
        changed[0].ids.tolist()
        == minilm_tokenizer("walnut desk", add_special_tokens=False)["input_ids"]
    )

    cache.put(["c"], ["floor lamp"])  # the least recently used entry ("b") goes
    assert len(cache) == 2
    cache.get(["b"], ["grey sofa"])
    assert cache.misses == 4


def test_mismatched_ids_and_texts_name_the_field(
    tokenizer_json: Path, minilm_tokenizer: PreTrainedTokenizerBase
) -> None:
    cache = ProductTokenCache(PairAssembler(str(tokenizer_json), 32, 0))
    with pytest.raises(ValueError, match="product_id"):
        cache.get(["a"], ["oak desk", "grey sofa"])
    with pytest.raises(ValueError, match="max_length"):
        PairAssembler(str(tokenizer_json), 3, 0)


class _Tensor:
    """What Triton's Python backend hands a model: ``as_numpy()`` of bytes objects."""

    def __init__(self, *values: str) -> None:
        self.values = np.array([v.encode() for v in values], dtype=object)

    def as_numpy(self) -> np.ndarray:
        return self.values


def test_request_rows_pair_the_query_with_cached_products(
    tokenizer_json: Path, minilm_tokenizer: PreTrainedTokenizerBase
) -> None:
    cache = ProductTokenCache(PairAssembler(str(tokenizer_json), 32, 0))
    inputs = {
        "query": _Tensor("oak desk"),
        "product_text": _Tensor("oak desk", "grey sofa"),
        "product_id": _Tensor("a", "b"),
    }
    rows = request_rows(cache, inputs.get)
    expected = minilm_tokenizer(["oak desk"] * 2, ["oak desk", "grey sofa"], padding=True)
    assert rows["input_ids"].tolist() == expected["input_ids"]
    assert (cache.misses, len(cache)) == (2, 2)
    # Without ids (an older caller) the texts key the cache.
    request_rows(cache, {k: v for k, v in inputs.items() if k != "product_id"}.get)
    assert len(cache) == 4

    with pytest.raises(ValueError, match="'product_text' is missing"):
        request_rows(cache, {"query": _Tensor("oak desk")}.get)
    with pytest.raises(ValueError, match="'query' must hold exactly 1 string"):
        request_rows(cache, {**inputs, "query": _Tensor("a", "b")}.get)
    with pytest.raises(ValueError, match="'product_id' has 1 ids for 2 texts"):
        request_rows(cache, {**inputs, "product_id": _Tensor("a")}.get)
