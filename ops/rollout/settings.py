"""Settings of `relkd rollout`, read from ``RELKD_ROLLOUT_*`` variables.

The kubeconfig (``RELKD_KUBECONFIG``) and the schemas directory (``RELKD_SCHEMAS_DIR``)
are shared with `relkd jobs` and come from :class:`ops.jobs.settings.K8sSettings`.
This module must not import kserve: the CLI reads it at start-up.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeploymentMode(StrEnum):
    # Canary traffic splitting needs Knative revisions: only Serverless mode has them.
    SERVERLESS = "Serverless"
    RAW = "RawDeployment"


class RolloutSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_ROLLOUT_", extra="ignore")

    namespace: str = Field("relevance-kd", description="Namespace of the InferenceService.")
    name: str = Field("student", description="Name of the InferenceService.")
    runtime: str = Field(
        "kserve-tritonserver", description="(Cluster)ServingRuntime that serves the Triton format."
    )
    runtime_version: str | None = Field(
        None, description="Triton image tag (e.g. 25.08-py3); unset: the runtime's default."
    )
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu per predictor Pod; 0 runs on CPU.")
    min_replicas: int = Field(1, ge=0, description="Fewest predictor Pods per revision.")
    max_replicas: int = Field(4, ge=1, description="Most predictor Pods per revision.")
    service_account: str = Field(
        "student-model-reader",
        description="ServiceAccount whose Secrets hold the object-storage credentials.",
    )
    deployment_mode: DeploymentMode = Field(
        DeploymentMode.SERVERLESS, description="Serverless (canary traffic) or RawDeployment."
    )
    canary_percent: int = Field(
        10, ge=0, le=100, description="Share of traffic a new version gets on `deploy`."
    )
