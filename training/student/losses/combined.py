"""The training objective: a weighted sum of the configured losses."""

from __future__ import annotations

import torch
from torch import nn

from training.student.config import LossWeights
from training.student.losses.cot import RationaleLoss
from training.student.losses.kl import GradeKLLoss
from training.student.losses.margin_mse import MarginMSELoss
from training.student.losses.mse import PointwiseMSELoss
from training.student.losses.targets import Targets
from training.student.models.base import StudentOutput


class CombinedLoss(nn.Module):
    """Sum of ``weight * loss``; returns the total and each weighted part (detached, on
    the device: the trainer reads them in batches, not once per step) for logging."""

    def __init__(self, losses: dict[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not losses:
            raise ValueError("CombinedLoss needs at least one loss with a positive weight")
        self.weights = {name: weight for name, (weight, _) in losses.items()}
        self.losses = nn.ModuleDict({name: loss for name, (_, loss) in losses.items()})

    def forward(
        self, output: StudentOutput, targets: Targets
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {
            name: self.weights[name] * loss(output, targets) for name, loss in self.losses.items()
        }
        total = torch.stack(list(parts.values())).sum()
        return total, {name: value.detach() for name, value in parts.items()}


def build_loss(weights: LossWeights) -> CombinedLoss:
    modules: dict[str, nn.Module] = {
        "margin_mse": MarginMSELoss(),
        "mse": PointwiseMSELoss(),
        "kl": GradeKLLoss(),
        "cot": RationaleLoss(),
    }
    return CombinedLoss(
        {
            name: (getattr(weights, name), module)
            for name, module in modules.items()
            if getattr(weights, name) > 0
        }
    )
