"""Margin-MSE (Hofstätter et al.; Walmart's student objective).

``((s_i - s_j) - (t_i - t_j))^2`` over pairs of products for the same query: the
student learns how much better one product is than another, not the teacher's
absolute calibration, which is what ranking needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.student.losses.targets import Targets
from training.student.models.base import StudentOutput


class MarginMSELoss(nn.Module):
    def forward(self, output: StudentOutput, targets: Targets) -> torch.Tensor:
        i, j = targets.pairs[:, 0], targets.pairs[:, 1]
        student = output.scores[i] - output.scores[j]
        teacher = targets.scores[i] - targets.scores[j]
        return F.mse_loss(student.float(), teacher.float())
