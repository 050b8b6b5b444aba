"""`relkd up` serves the newest trained teacher and student under RELKD_DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path

from contracts.artifacts import TeacherSpec, write_teacher_spec
from ops.served_models import discover


def teacher(directory: Path, version: str, mtime: int) -> Path:
    directory.mkdir(parents=True)
    spec = TeacherSpec(
        name="teacher",
        version=version,
        kind="classifier",
        backbone="tiny",
        template="{title}",
        max_length=32,
        temperature=1.0,
    )
    path = write_teacher_spec(spec, directory)
    os.utime(path, (mtime, mtime))
    return directory


def triton_model(repository: Path, model: str, mtime: int) -> Path:
    config = repository / model / "config.pbtxt"
    config.parent.mkdir(parents=True)
    config.write_text(f'name: "{model}"\n')
    os.utime(config, (mtime, mtime))
    return repository


def test_the_newest_teacher_and_triton_repository_are_found(tmp_path: Path) -> None:
    teacher(tmp_path / "old-run" / "teacher", "v1", 1_000)
    newest = teacher(tmp_path / "demo" / "teacher", "v2", 2_000)
    broken = tmp_path / "broken" / "teacher.json"
    broken.parent.mkdir()
    broken.write_text("{}")  # newest of all, but not a teacher
    triton_model(tmp_path / "old-run" / "triton-repository", "student", 1_000)
    repository = triton_model(tmp_path / "demo" / "triton-repository", "student", 2_000)

    found = discover(tmp_path)
    assert found.teacher == newest
    assert found.triton_repository == repository


def test_nothing_trained_means_nothing_to_serve(tmp_path: Path) -> None:
    found = discover(tmp_path / "missing")
    assert found.teacher is None and found.triton_repository is None
    assert discover(tmp_path).teacher is None


class RecordingTriton:
    """Stands in for the tritonserver process (tests/integration/triton shows that
    `load_model` on a repository with a new version directory serves that version)."""

    def __init__(self, repository: Path) -> None:
        self.model_repository = repository
        self.loads: list[str] = []

    def is_running(self) -> bool:
        return True

    def load_model(self, name: str) -> None:
        self.loads.append(name)


def test_a_new_student_version_is_loaded_without_a_restart(tmp_path: Path) -> None:
    from ops.stack import Stack
    from services.core.settings import Settings

    (tmp_path / "repo" / "student" / "1").mkdir(parents=True)
    triton = RecordingTriton(tmp_path / "repo")
    stack = Stack(
        "127.0.0.1:1",
        Settings(data_dir=tmp_path / "data"),
        {"RELKD_STUDENT_MODEL": "student"},
        triton=triton,  # type: ignore[arg-type]
    )
    stack.supervise_once()
    assert triton.loads == []
    (tmp_path / "repo" / "student" / "2").mkdir()  # a rollout writes version 2
    stack.supervise_once()
    stack.supervise_once()
    assert triton.loads == ["student"]
