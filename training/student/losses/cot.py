"""Chain-of-thought distillation: predict the teacher's rationale fields.

Cross-entropy of the auxiliary heads against the category / brand / attribute Match
values. ``NOT_STATED`` is a real class (the query names no brand, say), so every
field of every example contributes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.student.losses.targets import Targets
from training.student.models.base import StudentOutput


class RationaleLoss(nn.Module):
    def forward(self, output: StudentOutput, targets: Targets) -> torch.Tensor:
        logits = output.rationale_logits.float()
        return F.cross_entropy(logits.flatten(0, 1), targets.rationale.flatten())
