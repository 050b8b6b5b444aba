"""`relkd eval` kinds for trained models: `teacher=CHECKPOINT` and `student=CHECKPOINT`."""

from __future__ import annotations

from pathlib import Path

from training.eval.scorer import Scorer, register_scorer


def _checkpoint(kind: str, argument: str | None) -> Path:
    if not argument:
        raise ValueError(f"{kind}: give the checkpoint directory as `{kind}=PATH`")
    return Path(argument)


@register_scorer("teacher")
def _teacher(_dataset_dir: Path, argument: str | None) -> Scorer:
    from training.teacher.labeler import TeacherLabeler

    return TeacherLabeler.from_checkpoint(_checkpoint("teacher", argument))


@register_scorer("student")
def _student(_dataset_dir: Path, argument: str | None) -> Scorer:
    from training.student.checkpoint import load_student

    return load_student(_checkpoint("student", argument))
