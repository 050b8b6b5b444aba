"""Representation-based student: a query tower and a product tower.

Each tower mean-pools a MiniLM encoder and L2-normalises the result, so product
embeddings can be computed once per catalog change and queries embedded online. The
score is ``scale * cos(q, p) + bias`` with a learned scale and bias, which maps the
cosine onto the grade scale Margin-MSE and MSE compare against. The grade distribution
for the KL loss comes from an ordinal head on that score (see :func:`ordinal_grade_head`);
it and the rationale heads are training-only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from contracts import schema
from contracts.artifacts import PRODUCT_TOWER_DIR, QUERY_TOWER_DIR, TwoTowerSpec
from training.student.models.base import (
    RationaleHeads,
    StudentModel,
    StudentOutput,
    default_base_model,
    keep_layers,
)

KIND = "two-tower"
# Cosines of related texts sit around 0..1; this start maps them roughly onto 0..3.
INITIAL_SCALE = 3.0
INITIAL_BIAS = 0.0


def ordinal_grade_head() -> nn.Linear:
    """Grade logits from the score, starting as a unit Gaussian around it.

    ``log N(g; s, 1) = g*s - g**2/2 + const(s)``, and the softmax drops the constant,
    so a Linear(1 -> grades) with weight ``g`` and bias ``-g**2/2`` is exactly "the
    grade nearest the score is likeliest". A randomly initialised head instead starts
    unrelated to the score and barely moves at the encoder's learning rate (the first
    two-tower students had a grade accuracy of 0.05).
    """
    grades = torch.arange(schema.NUM_GRADES, dtype=torch.float32)
    head = nn.Linear(1, schema.NUM_GRADES)
    with torch.no_grad():
        head.weight.copy_(grades.unsqueeze(-1))
        head.bias.copy_(-(grades**2) / 2)
    return head


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class TwoTowerStudent(StudentModel):
    kind = KIND

    def __init__(
        self,
        query_tower: PreTrainedModel,
        product_tower: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        text_fields: list[str],
        scale: float = INITIAL_SCALE,
        bias: float = INITIAL_BIAS,
    ) -> None:
        super().__init__()
        self.query_tower = query_tower
        # Registered once when shared, so the optimizer sees each weight once.
        self.product_tower = product_tower
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_fields = list(text_fields)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))
        self.grade_head = ordinal_grade_head()
        hidden = query_tower.config.hidden_size
        self.rationale = RationaleHeads(3 * hidden)

    @property
    def shared(self) -> bool:
        return self.query_tower is self.product_tower

    @classmethod
    def from_base(
        cls,
        base_model: str | None = None,
        *,
        num_layers: int | None,
        max_length: int,
        text_fields: list[str],
        shared: bool = True,
    ) -> TwoTowerStudent:
        path = base_model or default_base_model()

        def tower() -> PreTrainedModel:
            return keep_layers(AutoModel.from_pretrained(path, add_pooling_layer=False), num_layers)

        query_tower = tower()
        product_tower = query_tower if shared else tower()
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(
            query_tower, product_tower, tokenizer, max_length=max_length, text_fields=text_fields
        )

    @classmethod
    def from_checkpoint(cls, path: Path, spec: TwoTowerSpec) -> TwoTowerStudent:
        query_tower = AutoModel.from_pretrained(path / QUERY_TOWER_DIR, add_pooling_layer=False)
        product_tower = (
            query_tower
            if spec.shared_towers
            else AutoModel.from_pretrained(path / PRODUCT_TOWER_DIR, add_pooling_layer=False)
        )
        student = cls(
            query_tower,
            product_tower,
            AutoTokenizer.from_pretrained(path / QUERY_TOWER_DIR),
            max_length=spec.max_length,
            text_fields=spec.text_fields,
            scale=spec.scale,
            bias=spec.bias,
        )
        student.load_aux(path)
        return student

    def _tokens(
        self, texts: list[str], pad_to_multiple_of: int | None = None
    ) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(
                texts,
                truncation=True,
                max_length=self.max_length,
                padding=True,
                pad_to_multiple_of=pad_to_multiple_of,
                return_tensors="pt",
            )
        )

    def tokenize(
        self, queries: list[str], texts: list[str], pad_to_multiple_of: int | None = None
    ) -> dict[str, Any]:
        return {
            "query": self._tokens(queries, pad_to_multiple_of),
            "product": self._tokens(texts, pad_to_multiple_of),
        }

    @staticmethod
    def _embed(tower: PreTrainedModel, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = tower(**tokens).last_hidden_state
        return F.normalize(mean_pool(hidden, tokens["attention_mask"]).float(), dim=-1)

    def embed_queries(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._embed(self.query_tower, tokens)

    def embed_products(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._embed(self.product_tower, tokens)

    def score_embeddings(self, query: torch.Tensor, product: torch.Tensor) -> torch.Tensor:
        return self.scale * (query * product).sum(-1) + self.bias

    def forward(self, inputs: dict[str, Any]) -> StudentOutput:
        query = self.embed_queries(inputs["query"])
        product = self.embed_products(inputs["product"])
        scores = self.score_embeddings(query, product)
        return StudentOutput(
            scores=scores,
            grade_logits=self.grade_head(scores.unsqueeze(-1)),
            rationale_logits=self.rationale(torch.cat([query, product, query * product], -1)),
        )

    def encoders(self) -> list[nn.Module]:
        return [self.query_tower] if self.shared else [self.query_tower, self.product_tower]

    def aux_modules(self) -> nn.ModuleDict:
        return nn.ModuleDict({"grade_head": self.grade_head, "rationale": self.rationale})

    def _save_serving(self, path: Path) -> dict[str, Any]:
        for folder, tower in (
            (QUERY_TOWER_DIR, self.query_tower),
            (PRODUCT_TOWER_DIR, self.product_tower),
        ):
            tower.save_pretrained(path / folder)
            self.tokenizer.save_pretrained(path / folder)
        return {
            "scale": float(self.scale.detach()),
            "bias": float(self.bias.detach()),
            "pooling": "mean",
            "shared_towers": self.shared,
        }
