"""The two student architectures; both return a :class:`StudentOutput`."""

from training.student.models.base import StudentModel, StudentOutput
from training.student.models.cross_encoder import CrossEncoderStudent
from training.student.models.two_tower import TwoTowerStudent

__all__ = ["CrossEncoderStudent", "StudentModel", "StudentOutput", "TwoTowerStudent"]
