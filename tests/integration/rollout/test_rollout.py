"""`relkd rollout` against a Kubernetes API emulator (kmock), and its manifests against
the upstream InferenceService CRD (strict: unknown fields forbidden)."""

from __future__ import annotations

import subprocess
import sys

import kmock
import pytest
import yaml
from typer.testing import CliRunner

from ops.rollout import cli
from ops.rollout.kserve_rollout import (
    PREVIOUS_STORAGE_URI_ANNOTATION,
    PREVIOUS_VERSION_ANNOTATION,
    VERSION_ANNOTATION,
    RolloutError,
    StudentRollout,
    StudentService,
    build_inference_service,
    to_manifest,
    validate_manifest,
)
from ops.rollout.settings import DeploymentMode

runner = CliRunner()
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/student"


def stored(emulator, name: str = "student", namespace: str = "ml") -> dict:
    return emulator.custom_objects().get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )


def test_dry_run_prints_a_manifest_that_validates(k8s_settings) -> None:
    result = runner.invoke(
        cli.app,
        ["deploy", "s3://models/students/v7", "--set", "gpus=2", "--canary", "20", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.stdout)
    assert validate_manifest(manifest, k8s_settings) == []
    assert manifest["metadata"]["annotations"][VERSION_ANNOTATION] == "v7"
    predictor = manifest["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["serviceAccountName"] == "student-model-reader"
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "triton"}
    assert model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://models/students/v7"
    assert model["protocolVersion"] == "grpc-v2"
    assert model["ports"] == [{"containerPort": 8001, "name": "h2c", "protocol": "TCP"}]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_cpu_student_has_no_gpu_and_validates(k8s_settings) -> None:
    spec = StudentService(
        name="cpu-student",
        namespace="ml",
        storage_uri="gs://models/students/v1",
        gpus=0,
        protocol="v2",
        deployment_mode=DeploymentMode.RAW,
    )
    manifest = to_manifest(build_inference_service(spec))
    assert validate_manifest(manifest, k8s_settings) == []
    predictor = manifest["spec"]["predictor"]
    assert "nvidia.com/gpu" not in predictor["model"]["resources"]["limits"]
    assert "nodeSelector" not in predictor and "tolerations" not in predictor
    assert "ports" not in predictor["model"]
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == (
        "RawDeployment"
    )


def test_validation_is_strict_about_unknown_fields(k8s_settings) -> None:
    spec = StudentService(name="student", namespace="ml", storage_uri="s3://models/v1")
    manifest = to_manifest(build_inference_service(spec))
    manifest["spec"]["predictor"]["model"]["storageURI"] = "s3://typo"
    problems = validate_manifest(manifest, k8s_settings)
    assert any("spec.predictor.model" in p and "storageURI" in p for p in problems), problems


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["s3://models/v1", "--canary", "150"], "canary_traffic_percent"),
        (["ftp://models/v1"], "storage_uri"),
        (["s3://models/v1", "--name", "Student_1"], "name"),
        (["s3://models/v1", "--set", "min_replicas=5", "-s", "max_replicas=2"], "max_replicas"),
        (
            ["s3://models/v1", "--set", "deployment_mode=RawDeployment", "--canary", "20"],
            "canary_traffic_percent",
        ),
        (["s3://models/v1", "--set", "deployment_mode=Raw"], "deployment_mode"),
    ],
)
def test_bad_input_names_the_field(args: list[str], field: str) -> None:
    result = runner.invoke(cli.app, ["deploy", *args, "--dry-run"])
    assert result.exit_code == 2
    assert field in result.output


def test_deploy_canary_promote_rollback_on_the_emulator(emulator, kubeconfig, monkeypatch) -> None:
    monkeypatch.setenv("RELKD_KUBECONFIG", str(kubeconfig))
    first = runner.invoke(cli.app, ["deploy", "s3://models/students/v1", "-n", "ml"])
    assert first.exit_code == 0, first.output
    created = stored(emulator)
    assert created["metadata"]["annotations"][VERSION_ANNOTATION] == "v1"
    assert created["spec"]["predictor"]["model"]["storageUri"] == "s3://models/students/v1"
    assert created["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # The first revision takes all traffic: no canary on creation.
    assert "canaryTrafficPercent" not in created["spec"]["predictor"]

    second = runner.invoke(
        cli.app, ["deploy", "s3://models/students/v2", "-n", "ml", "--canary", "25"]
    )
    assert second.exit_code == 0, second.output
    patched = stored(emulator)
    assert patched["spec"]["predictor"]["model"]["storageUri"] == "s3://models/students/v2"
    assert patched["spec"]["predictor"]["canaryTrafficPercent"] == 25
    annotations = patched["metadata"]["annotations"]
    assert annotations[VERSION_ANNOTATION] == "v2"
    assert annotations[PREVIOUS_VERSION_ANNOTATION] == "v1"
    assert annotations[PREVIOUS_STORAGE_URI_ANNOTATION] == "s3://models/students/v1"
    # The patch changes the model only: the serving shape stays.
    assert patched["spec"]["predictor"]["model"]["runtime"] == "kserve-tritonserver"
    assert (
        patched["spec"]["predictor"]["minReplicas"] == created["spec"]["predictor"]["minReplicas"]
    )

    promoted = runner.invoke(cli.app, ["promote", "-n", "ml"])
    assert promoted.exit_code == 0, promoted.output
    assert stored(emulator)["spec"]["predictor"]["canaryTrafficPercent"] == 100

    third = runner.invoke(cli.app, ["deploy", "s3://models/students/v3", "-n", "ml"])
    assert third.exit_code == 0, third.output
    assert stored(emulator)["spec"]["predictor"]["canaryTrafficPercent"] == 10  # the default

    rolled_back = runner.invoke(cli.app, ["rollback", "-n", "ml"])
    assert rolled_back.exit_code == 0, rolled_back.output
    assert stored(emulator)["spec"]["predictor"]["canaryTrafficPercent"] == 0

    # A rollback leaves 0%: a deploy without --canary in a script must not keep it.
    fourth = StudentRollout.connect(kubeconfig).deploy(
        StudentService(name="student", namespace="ml", storage_uri="s3://models/students/v4")
    )
    assert fourth.canary_traffic_percent == 100
    assert fourth.previous_version == "v3"


def test_status_reads_readiness_url_and_traffic(emulator, kubeconfig, monkeypatch) -> None:
    rollout = StudentRollout.connect(kubeconfig)
    rollout.deploy(StudentService(name="student", namespace="ml", storage_uri="s3://m/v1"))
    rollout.deploy(
        StudentService(
            name="student", namespace="ml", storage_uri="s3://m/v2", canary_traffic_percent=30
        )
    )
    # What the KServe controller would write once both revisions run.
    emulator.custom_objects().patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "ml",
        PLURAL,
        "student",
        {
            "status": {
                "url": "http://student.ml.example.com",
                "conditions": [{"type": "Ready", "status": "True"}],
                "components": {
                    "predictor": {
                        "traffic": [
                            {
                                "revisionName": "student-predictor-00002",
                                "percent": 30,
                                "latestRevision": True,
                                "tag": "latest",
                            },
                            {
                                "revisionName": "student-predictor-00001",
                                "percent": 70,
                                "latestRevision": False,
                                "tag": "prev",
                            },
                        ]
                    }
                },
            }
        },
    )
    status = rollout.status("student", "ml")
    assert status.ready
    assert status.url == "http://student.ml.example.com"
    assert (status.version, status.previous_version) == ("v2", "v1")
    assert {t.revision: t.percent for t in status.traffic} == {
        "student-predictor-00002": 30,
        "student-predictor-00001": 70,
    }
    monkeypatch.setenv("RELKD_KUBECONFIG", str(kubeconfig))
    shown = runner.invoke(cli.app, ["status", "-n", "ml"])
    assert shown.exit_code == 0, shown.output
    assert "student-predictor-00001" in shown.stdout and "70%" in shown.stdout


def test_raw_deployment_rolls_back_to_the_previous_storage_uri(emulator, kubeconfig) -> None:
    rollout = StudentRollout.connect(kubeconfig)
    raw = {"name": "student", "namespace": "ml", "deployment_mode": DeploymentMode.RAW}
    rollout.deploy(StudentService(storage_uri="s3://m/v1", **raw))
    rollout.deploy(StudentService(storage_uri="s3://m/v2", **raw))
    assert "canaryTrafficPercent" not in stored(emulator)["spec"]["predictor"]
    with pytest.raises(RolloutError, match="canary_traffic_percent"):
        rollout.deploy(
            StudentService(
                name="student", namespace="ml", storage_uri="s3://m/v3", canary_traffic_percent=10
            )
        )
    status = rollout.rollback("student", "ml")
    assert (status.storage_uri, status.version, status.previous_version) == (
        "s3://m/v1",
        "v1",
        None,
    )
    assert PREVIOUS_STORAGE_URI_ANNOTATION not in stored(emulator)["metadata"]["annotations"]
    with pytest.raises(RolloutError, match="no previous version"):
        rollout.rollback("student", "ml")


def test_api_errors_surface_as_clear_messages(emulator, kubeconfig, monkeypatch) -> None:
    monkeypatch.setenv("RELKD_KUBECONFIG", str(kubeconfig))
    missing = runner.invoke(cli.app, ["promote", "-n", "ml"])
    assert missing.exit_code == 1
    assert "InferenceService ml/student not found" in missing.output

    rollout = StudentRollout.connect(kubeconfig)
    rollout.deploy(StudentService(name="student", namespace="ml", storage_uri="s3://m/v1"))
    with pytest.raises(RolloutError, match="already serves s3://m/v1"):
        rollout.deploy(StudentService(name="student", namespace="ml", storage_uri="s3://m/v1"))
    with pytest.raises(RolloutError, match="no canary to promote"):
        rollout.promote("student", "ml")
    with pytest.raises(RolloutError, match="no previous version"):
        rollout.rollback("student", "ml")

    assert emulator.handler is not None
    emulator.handler[f"get {ISVC_PATH}"] << kmock.KubernetesError(
        status=403,
        reason="Forbidden",
        message='inferenceservices.serving.kserve.io "student" is forbidden',
    )
    forbidden = runner.invoke(cli.app, ["deploy", "s3://m/v2", "-n", "ml"])
    assert forbidden.exit_code == 1
    assert "Kubernetes API error 403" in forbidden.output
    assert "is forbidden" in forbidden.output and "RBAC" in forbidden.output


def test_unreachable_api_server_is_a_clear_error(tmp_path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                # Port 9 (discard) on loopback: nothing listens, the connection is refused.
                "clusters": [{"name": "none", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "u"}}],
                "current-context": "none",
            }
        )
    )
    from kubernetes import client

    default = client.Configuration.get_default_copy()
    try:
        rollout = StudentRollout.connect(kubeconfig)
        with pytest.raises(RolloutError, match="cannot reach the Kubernetes API"):
            rollout.status("student", "ml")
    finally:
        client.Configuration.set_default(default)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("ops.rollout.kserve_rollout", ("tritonclient",)),
        # `relkd` imports every area's CLI at start-up: no kserve there either.
        ("ops.rollout.cli", ("tritonclient", "kserve")),
    ],
)
def test_import_keeps_kserve_and_tritonclient_apart(
    module: str, forbidden: tuple[str, ...]
) -> None:
    code = (
        f"import sys, {module}\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
