"""`relkd jobs` against a Kubernetes API emulator (kmock) on loopback."""

from __future__ import annotations

import kmock
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from ops.jobs import cli
from ops.jobs.launcher import JobLauncher, RunKind, RunSpec, build_job, job_phase
from ops.jobs.validate import manifest_validator

runner = CliRunner()


def test_dry_run_prints_a_job_that_validates(k8s_settings) -> None:
    result = runner.invoke(
        cli.app, ["submit", "student-train", "--name", "s1", "--gpus", "2", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.stdout)
    validator = manifest_validator(k8s_settings.schemas_dir / "crds", k8s_settings.k8s_version)
    assert validator.validate(manifest) == []
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["student", "train", "--config", "/etc/relkd/student.yaml"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    shm = [v for v in manifest["spec"]["template"]["spec"]["volumes"] if v["name"] == "shm"]
    assert shm[0]["emptyDir"]["medium"] == "Memory"


def test_multi_node_run_is_an_indexed_torchrun_job(k8s_settings) -> None:
    manifest = build_job(RunSpec(kind=RunKind.TEACHER_TRAIN, name="t1", nodes=3, gpus=4))
    validator = manifest_validator(k8s_settings.schemas_dir / "crds", k8s_settings.k8s_version)
    assert validator.validate(manifest) == []
    spec = manifest["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == ["torchrun"]
    assert "--nproc-per-node=4" in container["args"]
    assert "--master-addr=t1-0.relkd-trainer" in container["args"]


def test_bad_input_names_the_field(tmp_path) -> None:
    result = runner.invoke(cli.app, ["submit", "student-train", "--gpus", "-1", "--dry-run"])
    assert result.exit_code == 2
    assert "gpus" in result.output
    spec_file = tmp_path / "run.yaml"
    spec_file.write_text("kind: teacher-label\nnodes: 2\n")
    result = runner.invoke(cli.app, ["submit", "--file", str(spec_file), "--dry-run"])
    assert result.exit_code == 2
    assert "nodes" in result.output


def test_file_fields_with_flags_winning(tmp_path) -> None:
    spec_file = tmp_path / "run.yaml"
    spec_file.write_text("kind: teacher-label\nname: from-file\nimage: reg/trainer:1\n")
    result = runner.invoke(
        cli.app, ["submit", "--file", str(spec_file), "--name", "from-flag", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.stdout)
    assert manifest["metadata"]["name"] == "from-flag"
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/trainer:1"


def test_submit_creates_the_job_on_the_emulator(emulator, monkeypatch) -> None:
    monkeypatch.setattr(
        cli, "_launcher", lambda ns: JobLauncher(ns or "relevance-kd", emulator.api_client())
    )
    result = runner.invoke(cli.app, ["submit", "student-train", "--name", "s2", "-n", "ml"])
    assert result.exit_code == 0, result.output
    stored = client.BatchV1Api(emulator.api_client()).read_namespaced_job("s2", "ml")
    assert stored.spec.template.spec.containers[0].args[:2] == ["student", "train"]

    listed = runner.invoke(cli.app, ["list", "-n", "ml"])
    assert "s2" in listed.stdout

    cancelled = runner.invoke(cli.app, ["cancel", "s2", "-n", "ml"])
    assert cancelled.exit_code == 0, cancelled.output
    with pytest.raises(ApiException) as gone:
        client.BatchV1Api(emulator.api_client()).read_namespaced_job("s2", "ml")
    assert gone.value.status == 404


def test_status_and_watch_follow_the_job(emulator) -> None:
    launcher = JobLauncher("ml", emulator.api_client())
    launcher.submit(build_job(RunSpec(kind=RunKind.STUDENT_TRAIN, name="s3", namespace="ml")))
    assert job_phase(launcher.get("s3")) == "Pending"
    # What the Job controller would write when the run completes.
    client.BatchV1Api(emulator.api_client()).patch_namespaced_job_status(
        "s3",
        "ml",
        {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
    )
    phases = [phase for phase, _ in launcher.watch("s3", timeout_s=10)]
    assert phases[-1] == "Succeeded"


def test_logs_stream_from_the_jobs_pods(emulator) -> None:
    core = client.CoreV1Api(emulator.api_client())
    core.create_namespaced_pod(
        "ml",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "s4-abc", "namespace": "ml", "labels": {"job-name": "s4"}},
            "spec": {"containers": [{"name": "trainer", "image": "x"}]},
        },
    )
    assert emulator.handler is not None
    emulator.handler["get /api/v1/namespaces/ml/pods/s4-abc/log"] << kmock.text("step 1\nstep 2\n")
    lines = list(JobLauncher("ml", emulator.api_client()).logs("s4"))
    assert lines == ["step 1", "step 2"]
