"""The teacher's (or raters') targets for the examples of one batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Targets:
    scores: torch.Tensor  # [n] expected grade
    grade_probs: torch.Tensor  # [n, NUM_GRADES]
    # [n, len(RATIONALE_FIELDS), NUM_MATCH] target distribution over the Match values
    rationale: torch.Tensor
    rationale_known: torch.Tensor  # bool [n, len(RATIONALE_FIELDS)]: False = missing
    pairs: torch.Tensor  # [p, 2] indices into the n examples, same query per pair

    def to(self, device: torch.device | str) -> Targets:
        return Targets(
            scores=self.scores.to(device, non_blocking=True),
            grade_probs=self.grade_probs.to(device, non_blocking=True),
            rationale=self.rationale.to(device, non_blocking=True),
            rationale_known=self.rationale_known.to(device, non_blocking=True),
            pairs=self.pairs.to(device, non_blocking=True),
        )

    def pin_memory(self) -> Targets:
        """Page-locked copies, so that ``to(cuda)`` does not wait for the copy."""
        return Targets(
            scores=self.scores.pin_memory(),
            grade_probs=self.grade_probs.pin_memory(),
            rationale=self.rationale.pin_memory(),
            rationale_known=self.rationale_known.pin_memory(),
            pairs=self.pairs.pin_memory(),
        )
