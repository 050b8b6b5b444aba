"""The controller's cluster trainer: a round's run spec as a student-train Job on a
Kubernetes API emulator, followed to success or failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from ops.jobs.launcher import JobLauncher, RunKind, RunSpec
from ops.loop.cluster import JobTrainer
from services.controller.controller import TrainingFailed
from training.student.config import StudentTrainConfig


class FinishingLauncher(JobLauncher):
    """The emulator has no Job controller: this writes the Job's final status right after
    creating it, as the Job controller would once the Pod exits."""

    def __init__(self, api_client: client.ApiClient, outcome: dict[str, Any]) -> None:
        super().__init__("ml", api_client)
        self.outcome = outcome
        self.submitted: list[dict[str, Any]] = []

    def submit(self, manifest: dict[str, Any]) -> client.V1Job:
        job = super().submit(manifest)
        self.submitted.append(manifest)
        self.batch.patch_namespaced_job_status(
            manifest["metadata"]["name"], "ml", {"status": self.outcome}
        )
        return job


def _train(emulator, tmp_path: Path, outcome: dict) -> tuple[FinishingLauncher, Any]:
    launcher = FinishingLauncher(emulator.api_client(), outcome)
    trainer = JobTrainer(
        launcher,
        RunSpec(kind=RunKind.STUDENT_TRAIN, namespace="ml", image="reg/trainer:7"),
        timeout_s=30,
    )
    config = StudentTrainConfig(
        dataset_dir=tmp_path / "dataset", output_dir=tmp_path / "candidate", version="3"
    )
    try:
        return launcher, trainer.train(tmp_path, config)
    except TrainingFailed as error:
        return launcher, error


def test_a_round_trains_as_a_job_reading_the_round_config(emulator, tmp_path: Path) -> None:
    launcher, value = _train(
        emulator, tmp_path, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    )
    (manifest,) = launcher.submitted
    assert manifest["metadata"]["name"].startswith("relkd-round-3-")
    stored = launcher.get(manifest["metadata"]["name"])
    container = stored.spec.template.spec.containers[0]
    config_file = tmp_path / "student.yaml"
    assert container.image == "reg/trainer:7"
    assert container.args == ["student", "train", "--config", str(config_file)]
    assert yaml.safe_load(config_file.read_text())["version"] == "3"
    assert value == tmp_path / "candidate"


def test_a_failed_job_fails_the_round_naming_it(emulator, tmp_path: Path) -> None:
    _, value = _train(
        emulator, tmp_path, {"failed": 4, "conditions": [{"type": "Failed", "status": "True"}]}
    )
    assert isinstance(value, TrainingFailed)
    assert "ml/relkd-round-3-" in str(value) and "failed" in str(value)


pytestmark = pytest.mark.integration
