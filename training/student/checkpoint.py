"""The student checkpoint contract and a Scorer over a checkpoint directory.

A checkpoint is a directory with ``student.json`` and Hugging Face
``save_pretrained`` folders (the exporter reads exactly this):

* cross-encoder: ``student.json`` = {"kind": "cross-encoder", "name", "version",
  "max_length", "text_fields", "num_grades": 4}; ``model/`` =
  ``AutoModelForSequenceClassification(num_labels=4)`` + tokenizer;
* two-tower: ``student.json`` = {"kind": "two-tower", "name", "version", "max_length",
  "text_fields", "scale", "bias", "pooling": "mean", "shared_towers"};
  ``query_tower/`` and ``product_tower/`` = ``AutoModel`` + tokenizer.

``aux_heads.pt`` holds the training-only heads (rationale, two-tower grade head).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contracts.text import product_text
from training.student.models.base import STUDENT_JSON, StudentModel, to_device
from training.student.models.cross_encoder import CrossEncoderStudent
from training.student.models.two_tower import TwoTowerStudent

_KINDS: dict[str, type[CrossEncoderStudent] | type[TwoTowerStudent]] = {
    CrossEncoderStudent.kind: CrossEncoderStudent,
    TwoTowerStudent.kind: TwoTowerStudent,
}


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = Path(path) / STUDENT_JSON
    if not meta_path.exists():
        raise ValueError(f"{path}: not a student checkpoint ({STUDENT_JSON} missing)")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") not in _KINDS:
        raise ValueError(
            f"{meta_path}: kind={meta.get('kind')!r}; expected one of {sorted(_KINDS)}"
        )
    return meta


def load_model(path: Path) -> StudentModel:
    """The student module of a checkpoint, on CPU, in train mode."""
    path = Path(path)
    meta = read_meta(path)
    return _KINDS[meta["kind"]].from_checkpoint(path, meta)


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

    def grade_probs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """[n, 4] grade distribution of each pair."""
        _, probs = self._outputs(queries, products)
        if probs is None:
            return np.zeros((0, 4), dtype=np.float32)
        return probs


def load_student(path: Path | str, *, device: str | None = None) -> StudentScorer:
    """A :class:`StudentScorer` for the checkpoint at ``path`` (what `relkd eval` loads)."""
    path = Path(path)
    meta = read_meta(path)
    model = _KINDS[meta["kind"]].from_checkpoint(path, meta)
    return StudentScorer(
        model,
        name=f"{meta['name']}:{meta['version']}",
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
