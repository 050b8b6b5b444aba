"""The controller on a cluster: candidates train as Kubernetes Jobs (ops/jobs/launcher.py)
and promotions are KServe canaries then promotions (ops/rollout).

kserve is imported only where a promoter is built: it cannot share a process with
``tritonclient.grpc`` (the embedded stack's promoter), and the CLI loads this module.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ops.jobs.launcher import JobLauncher, RunKind, RunSpec, build_job
from ops.rollout.service_spec import StudentService
from services.controller.controller import TrainingFailed, write_config
from services.controller.settings import ControllerSettings
from training.student.config import StudentTrainConfig

if TYPE_CHECKING:
    from ops.rollout.kserve_rollout import StudentRollout


class JobTrainer:
    """The round's run spec as a student-train Job; the config file lies on the data
    volume the Job mounts (the controller's work_dir is on it)."""

    def __init__(self, launcher: JobLauncher, template: RunSpec, timeout_s: float) -> None:
        self.launcher = launcher
        self.template = template
        self.timeout_s = timeout_s

    def train(self, round_dir: Path, config: StudentTrainConfig) -> Path:
        config_file = write_config(round_dir, config)
        name = f"relkd-round-{config.version}-{uuid.uuid4().hex[:6]}"
        spec = self.template.model_copy(
            update={"kind": RunKind.STUDENT_TRAIN, "name": name, "config": str(config_file)}
        )
        self.launcher.submit(build_job(spec))
        phase = "Pending"
        for phase, _job in self.launcher.watch(name, timeout_s=int(self.timeout_s)):
            if phase == "Succeeded":
                return config.output_dir
            if phase == "Failed":
                raise TrainingFailed(
                    f"Job {spec.namespace}/{name} failed; `relkd jobs logs {name}`"
                )
        self.launcher.cancel(name)
        raise TrainingFailed(
            f"Job {spec.namespace}/{name} still {phase} after {self.timeout_s:g} s"
        )


class KServePromoter:
    """A promotion deploys the round's Triton repository as a canary of the
    InferenceService, waits for it to be Ready, then gives it all traffic."""

    def __init__(
        self,
        rollout: StudentRollout,
        service: StudentService,
        settings: ControllerSettings,
        poll_s: float = 5.0,
    ) -> None:
        self.rollout = rollout
        self.service = service
        self.settings = settings
        self.poll_s = poll_s

    def storage_uri(self, version: int) -> str:
        return f"{self.settings.storage_uri_base.rstrip('/')}/round-{version:04d}/triton"

    def promote(self, export_dir: Path, version: int) -> str:
        repository = export_dir.parent / "triton"
        self._write_repository(export_dir, repository, version)
        spec = self.service.model_copy(
            update={"storage_uri": self.storage_uri(version), "version": str(version)}
        )
        status = self.rollout.deploy(spec)
        deadline = time.monotonic() + self.settings.canary_ready_timeout_s
        while not status.ready:
            if time.monotonic() > deadline:
                self.rollout.rollback(spec.name, spec.namespace)
                raise TimeoutError(
                    f"canary {spec.namespace}/{spec.name} version {version} not Ready after "
                    f"{self.settings.canary_ready_timeout_s:g} s; rolled back"
                )
            time.sleep(self.poll_s)
            status = self.rollout.status(spec.name, spec.namespace)
        if status.canary_traffic_percent not in (None, 100):
            status = self.rollout.promote(spec.name, spec.namespace)
        return f"InferenceService {spec.namespace}/{spec.name} version {status.version}"

    def _write_repository(self, export_dir: Path, repository: Path, version: int) -> None:
        """`relkd student triton-repo` in a subprocess: the repository writer imports
        tritonclient.grpc's protos, which cannot share a process with kserve's."""
        gpu = bool(self.service.gpus)
        command = [
            sys.executable,
            "-m",
            "ops",
            "student",
            "triton-repo",
            str(export_dir),
            str(repository),
            "--variant",
            "gpu" if gpu else "cpu",
            "--precision",
            "int8" if self.settings.int8_serving and not gpu else "fp32",
            "--model-name",
            self.settings.model_name,
            "--version",
            str(version),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"writing the Triton repository {repository} failed: {tail}")

    def rollback(self, version: int) -> str:
        status = self.rollout.rollback(self.service.name, self.service.namespace)
        return (
            f"InferenceService {status.namespace}/{status.name} version "
            f"{status.previous_version or status.version} (rolled back from {version})"
        )
