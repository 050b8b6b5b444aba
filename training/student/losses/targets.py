"""The teacher's (or raters') targets for the examples of one batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Targets:
    scores: torch.Tensor  # [n] expected grade
    grade_probs: torch.Tensor  # [n, NUM_GRADES]
    rationale: torch.Tensor  # [n, len(RATIONALE_FIELDS)] Match values (int64)
    pairs: torch.Tensor  # [p, 2] indices into the n examples, same query per pair

    def to(self, device: torch.device | str) -> Targets:
        return Targets(
            scores=self.scores.to(device),
            grade_probs=self.grade_probs.to(device),
            rationale=self.rationale.to(device),
            pairs=self.pairs.to(device),
        )
