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
            scores=self.scores.to(device, non_blocking=True),
            grade_probs=self.grade_probs.to(device, non_blocking=True),
            rationale=self.rationale.to(device, non_blocking=True),
            pairs=self.pairs.to(device, non_blocking=True),
        )

    def pin_memory(self) -> Targets:
        """Page-locked copies, so that ``to(cuda)`` does not wait for the copy."""
        return Targets(
            scores=self.scores.pin_memory(),
            grade_probs=self.grade_probs.pin_memory(),
            rationale=self.rationale.pin_memory(),
            pairs=self.pairs.pin_memory(),
        )
