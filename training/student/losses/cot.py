"""Chain-of-thought distillation: predict the teacher's rationale distributions.

Per field (category / brand / attribute match) the KL divergence from the target
distribution over the Match values to the auxiliary head's softmax: the teacher's soft
distribution for a teacher label, one-hot for a human judgment (where it equals the
cross-entropy). ``NOT_STATED`` is a real class (the query names no brand, say), but a
field with no target at all (``Targets.rationale_known`` False: no rationale heads on
the teacher, no rationale in the dataset) is masked: it adds neither loss nor gradient,
rather than teaching the heads a constant. The loss is the mean over the known fields;
a batch without any is zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.student.losses.targets import Targets
from training.student.models.base import StudentOutput


class RationaleLoss(nn.Module):
    def forward(self, output: StudentOutput, targets: Targets) -> torch.Tensor:
        log_q = F.log_softmax(output.rationale_logits.float(), dim=-1)
        target = targets.rationale.float()
        # KL(p || q) per (example, field); a missing field's p is zero, and the mask
        # also removes it from the mean.
        divergence = (torch.xlogy(target, target) - target * log_q).sum(-1)
        known = targets.rationale_known
        # clamp, not a branch: no host sync per step, and 0 / 1 keeps the graph.
        return (divergence * known).sum() / known.sum().clamp(min=1)
