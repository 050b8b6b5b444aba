"""`relkd eval --model student=PATH`: a student checkpoint as an eval scorer kind."""

from __future__ import annotations

from pathlib import Path

from training.eval.scorer import checkpoint_argument, register_scorer
from training.student.checkpoint import StudentScorer, load_student


@register_scorer("student")
def student_scorer(_dataset_dir: Path, argument: str | None) -> StudentScorer:
    return load_student(checkpoint_argument("student", argument))
