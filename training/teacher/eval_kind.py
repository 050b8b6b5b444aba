"""`relkd eval --model teacher=PATH`: a teacher checkpoint as an eval scorer kind.

Apart from the labeler so that the labeling service, which imports the labeler, does not
reach the eval registry (whose baselines need BM25's libraries).
"""

from __future__ import annotations

from pathlib import Path

from training.eval.scorer import checkpoint_argument, register_scorer
from training.teacher.labeler import TeacherLabeler


@register_scorer("teacher")
def teacher_scorer(_dataset_dir: Path, argument: str | None) -> TeacherLabeler:
    return TeacherLabeler.from_checkpoint(checkpoint_argument("teacher", argument))
