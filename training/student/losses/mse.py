"""Pointwise MSE between the student's score and the target expected grade.

Margin-MSE leaves the score's offset free; this small term anchors it to the grade
scale so that scores are comparable across queries (thresholds, serving).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.student.losses.targets import Targets
from training.student.models.base import StudentOutput


class PointwiseMSELoss(nn.Module):
    def forward(self, output: StudentOutput, targets: Targets) -> torch.Tensor:
        return F.mse_loss(output.scores.float(), targets.scores.float())
