"""Settings of the distillation controller, read from ``RELKD_CONTROLLER_*`` variables.

docs/loop.md describes a round and the gate rules these settings parameterise.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerKind(StrEnum):
    # The run spec as a subprocess on this machine (embedded stack, `relkd up`).
    LOCAL = "local"
    # The same run spec as a Kubernetes Job through ops/jobs/launcher.py.
    KUBERNETES = "kubernetes"


class ControllerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_CONTROLLER_", extra="ignore")

    work_dir: Path = Field(
        Path(".relkd/controller"),
        description="Round directories (training dataset, candidate checkpoint, export). On "
        "a cluster it lies on the data volume the training Jobs mount.",
    )
    ledger: Path = Field(
        Path(".relkd/controller/ledger.sqlite"), description="SQLite ledger of every round."
    )
    dataset_dir: Path = Field(
        Path(".relkd/datasets/simulated"),
        description="Dataset with the human labels: train queries the candidate learns "
        "from, dev queries for early stopping and the held-out test queries of the gate.",
    )
    student_config: Path | None = Field(
        None,
        description="StudentTrainConfig file (YAML/JSON) every candidate starts from; the "
        "controller sets dataset, label store snapshot, output directory, version and "
        "max_steps (from epochs). Unset: the trainer's defaults.",
    )
    serving_checkpoint: Path | None = Field(
        None,
        description="Checkpoint of the student serving before the first promotion (the gate "
        "compares the first candidate with it). Unset: the first passing candidate promotes.",
    )
    # When a round starts.
    min_new_labels: int = Field(
        2000, ge=1, description="Start a round once this many labels arrived since the last."
    )
    max_label_age_s: float = Field(
        3600.0,
        gt=0,
        description="Start a round once the oldest snapshot not trained on is this old, "
        "however few labels it added.",
    )
    check_interval_s: float = Field(30.0, gt=0, description="How often the thresholds are read.")
    failed_round_retry_s: float = Field(
        600.0,
        ge=0,
        description="After a failed round, wait this long before the thresholds may start "
        "another (a failed round's labels stay pending, so it is retried).",
    )
    # Training budget.
    trainer: TrainerKind = Field(
        TrainerKind.LOCAL, description="local: a subprocess; kubernetes: a Job (launcher)."
    )
    epochs: float = Field(
        3.0, gt=0, description="Passes over the training queries: the budget grows with data."
    )
    min_steps: int = Field(20, ge=1, description="Fewest optimizer steps of a candidate.")
    max_steps: int = Field(20000, ge=1, description="Most optimizer steps of a candidate.")
    train_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="Wall-clock limit of one candidate's training."
    )
    # The gate.
    gate_split: str = Field("test", description="Split of the human-labeled gate queries.")
    gate_traffic_queries: int = Field(
        200,
        ge=0,
        description="Newest teacher-labeled traffic queries held out of training for the "
        "gate: queries the serving student's snapshot did not have.",
    )
    bootstrap_samples: int = Field(1000, ge=100, description="Bootstrap resamples of queries.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence of the intervals.")
    ndcg_tolerance: float = Field(
        0.01,
        ge=0,
        description="Promote only if the lower bound of the paired NDCG@10 difference "
        "(candidate - serving) is at least -tolerance (non-inferiority).",
    )
    p99_budget_ms: float = Field(
        100.0, gt=0, description="Most p99 latency of one scoring request of the candidate."
    )
    latency_pairs_per_request: int = Field(
        20, ge=1, description="Pairs per timed request (a served query's candidates)."
    )
    latency_requests: int = Field(50, ge=5, description="Timed requests per model.")
    int8_serving: bool = Field(
        False,
        description="The student serves its int8 export: the int8-vs-fp32 Spearman check "
        "gates promotion. Off: it is measured and recorded, not gated.",
    )
    int8_min_spearman: float = Field(
        0.99, ge=-1, le=1, description="Least mean per-query Spearman of int8 vs fp32 scores."
    )
    # Rollback.
    rollback_disagreement_rate: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Roll a promoted student back once its live teacher disagreement rate "
        "exceeds this.",
    )
    # Where promotion goes.
    triton_repository: Path = Field(
        Path(".relkd/triton/models"),
        description="Embedded stack: the Triton model repository a promotion adds a version to.",
    )
    model_name: str = Field("relkd-student", description="Served model name.")
    triton_url: str | None = Field(
        None,
        description="Embedded stack: gRPC address of a Triton server in explicit model-control "
        "mode; a promotion or rollback reloads the model there. Unset: the repository only.",
    )
    storage_uri_base: str = Field(
        "pvc://relkd-data/controller",
        description="Cluster: the storage URI of work_dir as KServe reads it; a promoted "
        "round serves <base>/round-NNNN/triton.",
    )
    canary_ready_timeout_s: float = Field(
        900.0, gt=0, description="Cluster: how long a canary may take to become Ready."
    )
    disagreement_metrics_url: str | None = Field(
        None,
        description="Prometheus /metrics URL of the disagreement monitor; the controller reads "
        "the live disagreement rate there for rollbacks. Unset: no automatic rollback.",
    )
    disagreement_metric: str = Field(
        "relkd_monitor_disagreement_rate",
        description="Gauge of the live teacher-vs-student disagreement rate at that URL "
        "(the disagreement monitor's share of recent served pairs with a gap >= its min_gap).",
    )
    metrics_port: int = Field(9108, ge=0, description="Prometheus /metrics port; 0 disables.")
    metrics_host: str = Field("127.0.0.1", description="Address /metrics binds.")
    seed: int = Field(0, description="Seed of training and of the bootstrap.")
