"""training.teacher.train.finished_run: a finished teacher is found only for its settings."""

from __future__ import annotations

from pathlib import Path

from contracts.artifacts import TEACHER_JSON, TeacherSpec, write_teacher_spec
from training.teacher.config import TeacherTrainConfig
from training.teacher.train import CONFIG_FILE, finished_run


def test_finished_run_is_found_only_for_the_same_training_settings(tmp_path: Path) -> None:
    config = TeacherTrainConfig(backbone="some/backbone", output_dir=tmp_path / "teacher")
    assert finished_run(config) is None
    config.output_dir.mkdir()
    config.dump_yaml(config.output_dir / CONFIG_FILE)
    # The config alone is an interrupted run: save() writes teacher.json last.
    assert finished_run(config) is None
    spec = TeacherSpec(
        name="teacher",
        version="v1",
        kind="classifier",
        backbone="some/backbone",
        template="{query}",
        max_length=128,
        temperature=1.0,
        history=[{"step": 1, "ndcg@10": 0.5}],
    )
    write_teacher_spec(spec, config.output_dir)
    assert finished_run(config) == spec.model_dump(mode="json")
    # Threads and resuming do not change what a teacher learns; the seed does.
    rerun = config.model_copy(update={"num_threads": 2, "resume": True})
    assert finished_run(rerun) == spec.model_dump(mode="json")
    assert finished_run(config.model_copy(update={"seed": config.seed + 1})) is None
    assert finished_run(config.model_copy(update={"epochs": 2.0})) is None
    (config.output_dir / TEACHER_JSON).unlink()
    assert finished_run(config) is None
