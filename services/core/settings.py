"""Typed settings read from ``RELKD_*`` environment variables.

Every address, port, path and tunable the platform reads lives here, with its
default. ``docs/configuration.md`` lists them; a test keeps the two in step.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_", extra="ignore")

    # Kafka
    kafka_bootstrap: str = Field(
        "",
        description="Kafka bootstrap servers (host:port,...). Empty: `relkd up` starts an "
        "embedded broker and uses it.",
    )
    kafka_broker: str = Field(
        "tansu", description="Embedded broker to start: `tansu` (memory-only) or `noida`."
    )
    kafka_client_id: str = Field("relkd", description="Client id prefix for Kafka clients.")
    kafka_session_timeout_ms: int = Field(10000, description="Consumer group session timeout (ms).")
    kafka_max_poll_interval_ms: int = Field(
        300000,
        description="Longest gap between polls before a consumer is dropped from its group "
        "(ms); also bounds how long a rebalance waits for members.",
    )
    kafka_group_instance_id: str = Field(
        "",
        description="Static group membership id (e.g. the pod name of a StatefulSet): a "
        "restarted consumer with the same id takes over its partitions at once instead of "
        "waiting for the group to expire the dead member. Empty: dynamic membership.",
    )
    kafka_max_poll_records: int = Field(500, description="Records fetched per consumer poll.")
    kafka_linger_ms: int = Field(5, description="Producer linger before sending a batch (ms).")
    topic_partitions: int = Field(
        4, description="Partitions of each topic when the platform creates it."
    )
    topic_replication: int = Field(
        1, description="Replication factor of each topic when the platform creates it."
    )

    # gRPC
    grpc_host: str = Field("127.0.0.1", description="Interface the gRPC servers bind to.")
    candidate_generation_port: int = Field(50051, description="candidate-generation gRPC port.")
    teacher_labeling_port: int = Field(50052, description="teacher-labeling gRPC port.")
    student_inference_port: int = Field(50053, description="student-inference gRPC port.")
    label_store_port: int = Field(50054, description="label-store gRPC port (health only).")
    grpc_grace_s: float = Field(
        5.0, description="Seconds in-flight RPCs get to finish on graceful stop."
    )

    # Observability
    metrics_port: int = Field(
        0, description="Prometheus metrics port per service; 0 disables the endpoint."
    )
    log_level: str = Field("INFO", description="Log level of the services' JSON logs.")

    # Files
    data_dir: Path = Field(
        Path(".relkd"), description="Working directory for datasets, models and reports."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
