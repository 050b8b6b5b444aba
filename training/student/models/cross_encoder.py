"""Interaction-based student: a BERT-like cross-encoder over "query [SEP] product text".

One classification head with a logit per grade serves every loss: its softmax is the
grade distribution (KL), its expectation is the score (Margin-MSE, MSE). That is also
the serving contract: ``model/`` is a plain ``AutoModelForSequenceClassification``
with ``num_labels=4`` that the exporter can trace as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from contracts import schema
from contracts.artifacts import CROSS_ENCODER_DIR, CrossEncoderSpec
from training.student.models.base import (
    RationaleHeads,
    StudentModel,
    StudentOutput,
    default_base_model,
    expected_grade,
    keep_layers,
)

KIND = "cross-encoder"


class CrossEncoderStudent(StudentModel):
    kind = KIND

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        text_fields: list[str],
    ) -> None:
        super().__init__()
        if model.config.num_labels != schema.NUM_GRADES:
            raise ValueError(
                f"cross-encoder needs num_labels={schema.NUM_GRADES}, got {model.config.num_labels}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_fields = list(text_fields)
        self.rationale = RationaleHeads(model.config.hidden_size)

    @classmethod
    def from_base(
        cls,
        base_model: str | None = None,
        *,
        num_layers: int | None,
        max_length: int,
        text_fields: list[str],
    ) -> CrossEncoderStudent:
        """Start from a pretrained encoder, keeping only its first ``num_layers`` layers."""
        path = base_model or default_base_model()
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=schema.NUM_GRADES
        )
        model = keep_layers(model, num_layers)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, max_length=max_length, text_fields=text_fields)

    @classmethod
    def from_checkpoint(cls, path: Path, spec: CrossEncoderSpec) -> CrossEncoderStudent:
        model = AutoModelForSequenceClassification.from_pretrained(path / CROSS_ENCODER_DIR)
        tokenizer = AutoTokenizer.from_pretrained(path / CROSS_ENCODER_DIR)
        student = cls(model, tokenizer, max_length=spec.max_length, text_fields=spec.text_fields)
        student.load_aux(path)
        return student

    def tokenize(
        self, queries: list[str], texts: list[str], pad_to_multiple_of: int | None = None
    ) -> dict[str, Any]:
        return dict(
            self.tokenizer(
                queries,
                texts,
                truncation="longest_first",
                max_length=self.max_length,
                padding=True,
                pad_to_multiple_of=pad_to_multiple_of,
                return_tensors="pt",
            )
        )

    def forward(self, inputs: dict[str, Any]) -> StudentOutput:
        out = self.model(**inputs, output_hidden_states=True)
        cls_state = out.hidden_states[-1][:, 0]
        return StudentOutput(
            scores=expected_grade(out.logits),
            grade_logits=out.logits,
            rationale_logits=self.rationale(cls_state),
        )

    def encoders(self) -> list[nn.Module]:
        return [self.model]

    def aux_modules(self) -> nn.ModuleDict:
        return nn.ModuleDict({"rationale": self.rationale})

    def _save_serving(self, path: Path) -> dict[str, Any]:
        self.model.save_pretrained(path / CROSS_ENCODER_DIR)
        self.tokenizer.save_pretrained(path / CROSS_ENCODER_DIR)
        return {"num_grades": schema.NUM_GRADES}
