"""What `relkd rollout deploy` serves: one student version as an InferenceService.

Apart from :mod:`ops.rollout.kserve_rollout` (which imports kserve) so that the CLI can
build `relkd rollout deploy`'s options and ``--help`` from it at start-up.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field, model_validator

from ops.rollout.settings import DeploymentMode


class Protocol(StrEnum):
    GRPC_V2 = "grpc-v2"
    V2 = "v2"


class StudentService(BaseModel):
    """One student version served by an InferenceService."""

    # KServe derives <name>-predictor-<5 digits> revision names that must stay DNS labels.
    name: str = Field(
        pattern=r"^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$", description="Name of the InferenceService."
    )
    namespace: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", description="Its namespace."
    )
    storage_uri: str = Field(
        pattern=r"^(s3|gs|pvc|hdfs|webhdfs|oci|hf|https?)://\S+$",
        description="Triton model repository in object storage, e.g. s3://bucket/students/v3.",
    )
    version: str | None = Field(
        None, max_length=63, description="Version label; default: the URI's last path segment."
    )
    runtime: str = Field(
        "kserve-tritonserver", description="(Cluster)ServingRuntime that serves the Triton format."
    )
    runtime_version: str | None = Field(
        None, description="Triton image tag (e.g. 25.08-py3); null: the runtime's default."
    )
    protocol: Protocol = Field(Protocol.GRPC_V2, description="Inference protocol of the predictor.")
    gpus: int = Field(1, ge=0, le=16, description="nvidia.com/gpu per predictor Pod; 0: CPU.")
    cpu: str = Field("1", description="CPU request per predictor Pod.")
    memory: str = Field("4Gi", description="Memory request per predictor Pod.")
    cpu_limit: str = Field("4", description="CPU limit per predictor Pod.")
    memory_limit: str = Field("8Gi", description="Memory limit per predictor Pod.")
    min_replicas: int = Field(1, ge=0, description="Fewest predictor Pods per revision.")
    max_replicas: int = Field(4, ge=1, description="Most predictor Pods per revision.")
    canary_traffic_percent: int | None = Field(
        None, ge=0, le=100, description="Traffic to this version while the previous one stays."
    )
    service_account: str = Field(
        "student-model-reader",
        description="ServiceAccount whose Secrets hold the object-storage credentials.",
    )
    deployment_mode: DeploymentMode = Field(
        DeploymentMode.SERVERLESS, description="Serverless (canary traffic) or RawDeployment."
    )
    gpu_node_selector: dict[str, str] = Field(
        {"relkd.io/pool": "gpu"}, description="nodeSelector of predictor Pods with GPUs."
    )

    @model_validator(mode="after")
    def _consistent(self) -> StudentService:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        if self.deployment_mode is DeploymentMode.RAW and self.canary_traffic_percent not in (
            None,
            100,
        ):
            raise ValueError(
                "canary_traffic_percent: canary traffic needs the Serverless deployment mode"
            )
        if self.version is None:
            self.version = self.storage_uri.rstrip("/").rsplit("/", 1)[-1]
        return self
