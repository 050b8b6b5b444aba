"""What `relkd up` serves by default: the newest trained teacher and student under
``RELKD_DATA_DIR`` (for example the outputs of `relkd demo`).

A teacher is a directory with ``teacher.json`` (``relkd teacher train``); a student is
a Triton model repository, a directory whose model folders hold ``config.pbtxt``
(``relkd demo``'s serve stage, ``relkd student triton-repo``). Newest means the most
recently written ``teacher.json`` / ``config.pbtxt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contracts.artifacts import TEACHER_JSON, read_teacher_spec

TRITON_CONFIG = "config.pbtxt"
MAKE_TEACHER = "`relkd demo` or `relkd teacher train`"
MAKE_STUDENT = "`relkd demo` or `relkd student triton-repo`"


@dataclass(frozen=True)
class ServedModels:
    teacher: Path | None
    triton_repository: Path | None


def _newest(paths: list[Path]) -> Path | None:
    existing = [p for p in paths if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def newest_teacher(data_dir: Path) -> Path | None:
    """The newest valid teacher checkpoint under `data_dir`, or None."""
    candidates = []
    for spec in data_dir.rglob(TEACHER_JSON):
        try:
            read_teacher_spec(spec.parent)
        except ValueError:
            continue  # a half-written or foreign teacher.json is not a teacher to serve
        candidates.append(spec)
    newest = _newest(candidates)
    return newest.parent if newest else None


def newest_triton_repository(data_dir: Path) -> Path | None:
    """The Triton model repository under `data_dir` with the newest model config, or None."""
    newest = _newest(list(data_dir.rglob(f"*/{TRITON_CONFIG}")))
    return newest.parent.parent if newest else None


def discover(data_dir: Path) -> ServedModels:
    if not data_dir.is_dir():
        return ServedModels(None, None)
    return ServedModels(newest_teacher(data_dir), newest_triton_repository(data_dir))
