"""Distillation losses, one module each, combined by configured weights.

Every loss takes the student's :class:`~training.student.models.StudentOutput` for
the unique examples of a batch and the :class:`Targets` of those examples.
"""

from training.student.losses.combined import CombinedLoss, build_loss
from training.student.losses.cot import RationaleLoss
from training.student.losses.kl import GradeKLLoss
from training.student.losses.margin_mse import MarginMSELoss
from training.student.losses.mse import PointwiseMSELoss
from training.student.losses.targets import Targets

__all__ = [
    "CombinedLoss",
    "GradeKLLoss",
    "MarginMSELoss",
    "PointwiseMSELoss",
    "RationaleLoss",
    "Targets",
    "build_loss",
]
