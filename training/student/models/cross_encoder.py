"""Interaction-based student: a BERT-like cross-encoder over "query [SEP] product text".

One classification head serves every loss: a logit per grade, whose softmax is the
grade distribution (KL), and a free score logit; the score (Margin-MSE, MSE) is the
expected grade plus that logit (``base.cross_encoder_head`` says why). That is also
the serving contract: ``model/`` is a plain ``AutoModelForSequenceClassification``
with ``num_labels=5`` that the exporter traces as is (``num_labels=4`` checkpoints
from before the free logit still load and score by the expected grade).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
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
    CROSS_ENCODER_LABELS,
    RationaleHeads,
    StudentModel,
    StudentOutput,
    cross_encoder_head,
    default_base_model,
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
        if model.config.num_labels not in (CROSS_ENCODER_LABELS, schema.NUM_GRADES):
            raise ValueError(
                f"cross-encoder needs num_labels={CROSS_ENCODER_LABELS} (grades + score), "
                f"got {model.config.num_labels}"
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
            path, num_labels=CROSS_ENCODER_LABELS
        )
        with torch.no_grad():
            # The free score logit's bias starts at zero, so the score starts centred on
            # the expected grade. Its weights keep their random initialisation: a zero row
            # passes the encoder no Margin-MSE gradient until it has grown, and cost 0.07
            # NDCG@10 used alone (bench/results/student_train_variants.json).
            model.classifier.bias[schema.NUM_GRADES].zero_()
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
        scores, grade_logits = cross_encoder_head(out.logits)
        return StudentOutput(
            scores=scores,
            grade_logits=grade_logits,
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
