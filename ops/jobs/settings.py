"""Settings of `relkd jobs` and `relkd k8s validate`, read from ``RELKD_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
# The offline checks of `relkd k8s validate`, in the order they run.
CHECKS = ("yamllint", "kustomize", "schema", "skaffold", "checkov")


class K8sSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_", extra="ignore")

    jobs_namespace: str = Field(
        "relevance-kd", description="Namespace `relkd jobs` submits training Jobs to."
    )
    trainer_image: str = Field(
        "relkd-trainer:0.1.0", description="Default image of training Jobs (training/Dockerfile)."
    )
    kubeconfig: Path | None = Field(
        None,
        description="kubeconfig for `relkd jobs`; unset: in-cluster config, then ~/.kube/config.",
    )
    schemas_dir: Path = Field(
        REPO_ROOT.parent / "shared" / "schemas",
        description="Upstream CRD and skaffold schemas (crds/, skaffold/v4beta14.json).",
    )
    kubectl: str = Field("kubectl", description="kubectl executable that renders kustomize.")
    checkov: str = Field(
        "checkov", description="checkov executable (its own venv: see docs/deployment.md)."
    )
    k8s_version: str = Field(
        "1.33.0", description="Kubernetes version whose schemas built-in kinds must match."
    )
