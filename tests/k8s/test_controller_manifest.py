"""The controller's Deployment renders, runs `relkd controller` under its own
ServiceAccount, and that account may do exactly what a round needs."""

from __future__ import annotations

import pytest

from ops.jobs.settings import REPO_ROOT, K8sSettings
from ops.jobs.validate import manifest_validator, render, split_documents

# What a round does through the API: submit, follow and cancel its training Jobs
# (ops/jobs/launcher.py) and move the InferenceService's canary (ops/rollout).
NEEDED = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("serving.kserve.io", "inferenceservices"): {"get", "patch"},
}


@pytest.fixture(scope="module")
def objects(k8s_settings: K8sSettings) -> list[dict]:
    return list(split_documents(render(REPO_ROOT / "k8s/overlays/prod-gpu", k8s_settings.kubectl)))


def _named(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_controller_deployment_validates_and_runs_the_controller(
    objects: list[dict], k8s_settings: K8sSettings
) -> None:
    deployment = _named(objects, "Deployment", "relkd-controller")
    validator = manifest_validator(k8s_settings.schemas_dir / "crds", k8s_settings.k8s_version)
    assert validator.validate(deployment) == []
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "relkd-controller"
    (container,) = pod["containers"]
    dockerfile = (REPO_ROOT / "services/controller/Dockerfile").read_text()
    assert 'ENTRYPOINT ["relkd", "controller"]' in dockerfile
    assert container["image"].startswith("relkd-controller")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RELKD_CONTROLLER_TRAINER"] == "kubernetes"
    # Rounds write where the training Jobs read: the relkd-data volume at /var/lib/relkd.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]
    }
    assert env["RELKD_CONTROLLER_WORK_DIR"].startswith("/var/lib/relkd/")
    assert claims[mounts["/var/lib/relkd"]] == "relkd-data"
    assert claims[mounts[env["RELKD_LABEL_STORE_DIR"]]] == "label-store"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_controller_account_has_exactly_what_a_round_needs(objects: list[dict]) -> None:
    role = _named(objects, "Role", "relkd-controller")
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == NEEDED
    binding = _named(objects, "RoleBinding", "relkd-controller")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "relkd-controller",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "relkd-controller", "namespace": "relevance-kd"}
    ]
    # No cluster-wide grant names the controller.
    for obj in (o for o in objects if o["kind"] == "ClusterRoleBinding"):
        assert all(s.get("name") != "relkd-controller" for s in obj.get("subjects", []))
    # The account is the controller's alone.
    users = [
        o["metadata"]["name"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
        and o["spec"]["template"]["spec"].get("serviceAccountName") == "relkd-controller"
    ]
    assert users == ["relkd-controller"]
