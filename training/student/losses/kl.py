"""KL divergence from the target grade distribution to the student's (Taobao MKD).

The soft targets carry the teacher's uncertainty between neighbouring grades, which
a single expected score loses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.student.losses.targets import Targets
from training.student.models.base import StudentOutput


class GradeKLLoss(nn.Module):
    def forward(self, output: StudentOutput, targets: Targets) -> torch.Tensor:
        if output.grade_logits is None:
            raise ValueError("kl loss: this student has no grade head (set loss_weights.kl=0)")
        log_probs = F.log_softmax(output.grade_logits.float(), dim=-1)
        return F.kl_div(log_probs, targets.grade_probs.float(), reduction="batchmean")
