"""The offline checks pass on the repository and fail on deliberately broken manifests."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ops.cli import app as relkd
from ops.jobs.settings import REPO_ROOT, K8sSettings
from ops.jobs.validate import (
    ManifestValidator,
    _find_executable,
    kustomizations,
    manifest_validator,
    render,
    split_documents,
    validate_repository,
)

OFFLINE_CHECKS = ("yamllint", "kustomize", "schema", "skaffold")


@pytest.fixture(scope="module")
def validator(k8s_settings: K8sSettings) -> ManifestValidator:
    return manifest_validator(k8s_settings.schemas_dir / "crds", k8s_settings.k8s_version)


@pytest.fixture(scope="module")
def prod_objects(k8s_settings: K8sSettings) -> list[dict]:
    return list(split_documents(render(REPO_ROOT / "k8s/overlays/prod-gpu", k8s_settings.kubectl)))


def _first(objects: list[dict], kind: str) -> dict:
    # A copy: the rendering is shared by the tests, which each break it differently.
    return copy.deepcopy(next(obj for obj in objects if obj["kind"] == kind))


def test_every_overlay_renders_and_validates(k8s_settings: K8sSettings) -> None:
    rendered = {
        d.relative_to(REPO_ROOT / "k8s").as_posix() for d in kustomizations(REPO_ROOT / "k8s")
    }
    assert {"overlays/dev", "overlays/prod-gpu", "training/base", "training/prod-gpu"} <= rendered
    problems = validate_repository(settings=k8s_settings, checks=OFFLINE_CHECKS)
    assert problems == []


def test_checkov_passes(k8s_settings: K8sSettings) -> None:
    if _find_executable(k8s_settings.checkov) is None:
        pytest.skip("checkov not installed: set RELKD_CHECKOV to its executable")
    assert validate_repository(settings=k8s_settings, checks=("checkov",)) == []


def test_wrong_field_type_fails(validator: ManifestValidator, prod_objects: list[dict]) -> None:
    pdb = _first(prod_objects, "PodDisruptionBudget")
    assert validator.validate(pdb) == []
    pdb["spec"]["selector"] = "app=x"
    assert any(m.startswith("spec.selector:") for m in validator.validate(pdb))


def test_unknown_field_fails(validator: ManifestValidator, prod_objects: list[dict]) -> None:
    deployment = _first(prod_objects, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert validator.validate(deployment)


def test_removed_api_version_fails(validator: ManifestValidator, prod_objects: list[dict]) -> None:
    hpa = _first(prod_objects, "HorizontalPodAutoscaler")
    hpa["apiVersion"] = "autoscaling/v2beta1"
    assert "no schema" in validator.validate(hpa)[0]
    topic = _first(prod_objects, "KafkaTopic")
    topic["apiVersion"] = "kafka.strimzi.io/v1beta2"
    assert "not served" in validator.validate(topic)[0]


def test_crd_kinds_are_checked_strictly(
    validator: ManifestValidator, prod_objects: list[dict]
) -> None:
    topic = _first(prod_objects, "KafkaTopic")
    assert validator.validate(topic) == []
    topic["spec"]["partitionz"] = 3
    assert validator.validate(topic)
    topic["spec"].pop("partitionz")
    topic["spec"]["partitions"] = "twelve"
    assert any(m.startswith("spec.partitions:") for m in validator.validate(topic))


def test_unknown_kind_fails(validator: ManifestValidator) -> None:
    assert validator.validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}})


def test_broken_repository_fails_every_layer(k8s_settings: K8sSettings, tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "k8s", tmp_path / "k8s")
    skaffold = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    skaffold["build"]["artifacts"][0]["docker"]["dockerfile"] = ["not", "a", "path"]
    (tmp_path / "skaffold.yaml").write_text(yaml.safe_dump(skaffold))
    hpa_file = tmp_path / "k8s/base/student-inference.yaml"
    hpa_file.write_text(hpa_file.read_text().replace("minReplicas: 3", "minReplicas: three"))

    problems = validate_repository(tmp_path, k8s_settings, checks=("schema", "skaffold"))
    found = {(p.check, p.message.split(":")[0]) for p in problems}
    assert ("schema", "spec.minReplicas") in found
    assert ("skaffold", "build.artifacts.0.docker.dockerfile") in found


def test_relkd_k8s_validate_is_mounted(k8s_settings: K8sSettings) -> None:
    runner = CliRunner()
    passed = runner.invoke(relkd, ["k8s", "validate", "--check", "yamllint", "--check", "skaffold"])
    assert passed.exit_code == 0, passed.output
    assert "all checks passed: yamllint, skaffold" in passed.output
    unknown = runner.invoke(relkd, ["k8s", "validate", "--check", "spelling"])
    assert unknown.exit_code == 2
    assert "unknown checks ['spelling']" in unknown.output
