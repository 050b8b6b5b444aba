"""Load a student checkpoint, and a Scorer over it.

The checkpoint layout and ``student.json`` are the artifact contract in
``contracts.artifacts`` (``StudentModel.save`` writes it, the exporter reads it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contracts.artifacts import CrossEncoderSpec, TwoTowerSpec, read_student_spec
from contracts.text import product_text
from training.student.models.base import StudentModel, to_device
from training.student.models.cross_encoder import CrossEncoderStudent
from training.student.models.two_tower import TwoTowerStudent


def _from_spec(path: Path, spec: CrossEncoderSpec | TwoTowerSpec) -> StudentModel:
    if isinstance(spec, CrossEncoderSpec):
        return CrossEncoderStudent.from_checkpoint(path, spec)
    return TwoTowerStudent.from_checkpoint(path, spec)


def load_model(path: Path) -> StudentModel:
    """The student module of a checkpoint, on CPU, in train mode."""
    path = Path(path)
    return _from_spec(path, read_student_spec(path))


class StudentScorer:
    """Implements the evaluation ``Scorer`` protocol for a student checkpoint."""

    def __init__(
        self,
        model: StudentModel,
        *,
        name: str,
        batch_size: int = 128,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.name = name
        self.batch_size = batch_size
        self.device = torch.device(device)

    def _texts(self, products: Sequence[Mapping[str, Any]]) -> list[str]:
        return [product_text(dict(p), self.model.text_fields) for p in products]

    @torch.inference_mode()
    def _outputs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if len(queries) != len(products):
            raise ValueError(f"score_pairs: {len(queries)} queries but {len(products)} products")
        texts = self._texts(products)
        scores, probs = [], []
        for start in range(0, len(texts), self.batch_size):
            stop = start + self.batch_size
            inputs = to_device(
                self.model.tokenize(list(queries[start:stop]), texts[start:stop]), self.device
            )
            out = self.model(inputs)
            scores.append(out.scores.float().cpu().numpy())
            if out.grade_logits is not None:
                probs.append(out.grade_logits.float().softmax(-1).cpu().numpy())
        if not texts:
            return np.zeros(0, dtype=np.float32), None
        return np.concatenate(scores), (np.concatenate(probs) if probs else None)

    def score_pairs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """Relevance of each (query, product row) pair, in grade units."""
        return self._outputs(queries, products)[0]

    def score_and_grade_probs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and the [n, 4] grade distribution of each pair, from one forward pass."""
        scores, probs = self._outputs(queries, products)
        if probs is None:
            probs = np.zeros((len(scores), 4), dtype=np.float32)
        return scores, probs


def load_student(path: Path | str, *, device: str | None = None) -> StudentScorer:
    """A :class:`StudentScorer` for the checkpoint at ``path`` (what `relkd eval` loads)."""
    path = Path(path)
    spec = read_student_spec(path)
    return StudentScorer(
        _from_spec(path, spec),
        name=str(spec.model_ref),
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
