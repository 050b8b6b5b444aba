"""Typed settings read from ``RELKD_*`` environment variables.

Every address, port, path and tunable the platform reads lives here, with its
default. ``docs/configuration.md`` lists them; a test keeps the two in step.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

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
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How Kafka clients talk to the brokers: `SSL` (TLS, client certificate "
        "optional), `SASL_SSL` (TLS + SASL login), `SASL_PLAINTEXT` or `PLAINTEXT`.",
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle Kafka clients verify the brokers with (SSL)."
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate for Kafka TLS client authentication."
    )
    kafka_ssl_keyfile: Path | None = Field(
        None, description="PEM private key of `kafka_ssl_certfile`."
    )
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "", description="SASL mechanism (with a SASL_* protocol), e.g. `SCRAM-SHA-512`."
    )
    kafka_sasl_username: str = Field("", description="SASL user name (the KafkaUser's name).")
    kafka_sasl_password_file: Path | None = Field(
        None, description="File holding the SASL password (mounted from a Secret)."
    )
    kafka_request_timeout_ms: int = Field(
        10000,
        description="Bound on every blocking Kafka call (a request, a commit, a close, a "
        "send waiting for metadata): a paused or unreachable broker fails the call "
        "instead of wedging the consumer loop.",
    )
    kafka_delivery_timeout_ms: int = Field(
        30000,
        description="Longest time a published message may take to be acknowledged, "
        "retries included; a consumer's flush waits at most this long, then its batch "
        "fails and is retried (never committed).",
    )
    kafka_max_message_bytes: int = Field(
        1048576,
        description="Largest message the bus handles (Kafka's default max.message.bytes). "
        "A consumed message above it is dead-lettered as a reference (topic, partition, "
        "offset, size) without its payload; a dead letter never carries a payload that "
        "would exceed it.",
    )
    bus_retry_backoff_s: float = Field(
        0.5,
        description="First wait before a batch that failed transiently (broker, Triton, "
        "out of memory) is retried; doubles per attempt. Its partitions stay paused and "
        "uncommitted meanwhile.",
    )
    bus_retry_backoff_max_s: float = Field(
        30.0, description="Longest wait between two retries of a transiently failed batch."
    )
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
    disagreement_monitor_port: int = Field(
        50055, description="disagreement-monitor gRPC port (health only)."
    )
    grpc_grace_s: float = Field(
        5.0, description="Seconds in-flight RPCs get to finish on graceful stop."
    )
    shutdown_deadline_s: float = Field(
        25.0,
        gt=0,
        description="Hard bound on a service's graceful stop: past it the process exits at "
        "once (a batch in flight stays uncommitted and is redelivered). Below Kubernetes' "
        "default 30 s grace, and what bounds a stop when no supervisor is left to SIGKILL.",
    )

    # gRPC security (docs/security.md). Secrets are read from files, never from settings.
    grpc_tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain the gRPC servers present. Unset (with the key): "
        "plaintext.",
    )
    grpc_tls_key_file: Path | None = Field(
        None, description="PEM private key of `grpc_tls_cert_file`."
    )
    grpc_tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle: when set, servers demand a client certificate signed by "
        "it (mTLS).",
    )
    grpc_auth_tokens_file: Path | None = Field(
        None,
        description="File of `caller:token` lines: when set, every RPC but health and "
        "reflection needs `authorization: Bearer <token>` with one of them, else "
        "UNAUTHENTICATED.",
    )
    grpc_tls_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle the platform's gRPC clients verify servers with; set: "
        "clients use TLS.",
    )
    grpc_tls_client_cert_file: Path | None = Field(
        None, description="PEM client certificate the platform's gRPC clients present (mTLS)."
    )
    grpc_tls_client_key_file: Path | None = Field(
        None, description="PEM private key of `grpc_tls_client_cert_file`."
    )
    grpc_auth_token_file: Path | None = Field(
        None,
        description="File holding the token the platform's gRPC clients send (TLS only).",
    )
    grpc_health_port: int = Field(
        0,
        ge=0,
        description="A second, plaintext port serving grpc.health.v1 only, for probes that "
        "cannot speak TLS (Kubernetes' native gRPC probe); 0: none. One per pod (every "
        "service would bind the same port on one machine).",
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

    def kafka_security(self) -> dict[str, object]:
        """kafka-python keyword arguments for the configured SSL/SASL, for every client."""
        protocol = self.kafka_security_protocol
        config: dict[str, object] = {"security_protocol": protocol}
        if protocol in ("SSL", "SASL_SSL"):
            config["ssl_check_hostname"] = True
            for option in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                path = getattr(self, f"kafka_{option}")
                if path is not None:
                    config[option] = str(path)
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile: a client certificate needs both file and key")
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_mechanism or not self.kafka_sasl_username:
                raise ValueError(
                    f"kafka_sasl_mechanism: {protocol} needs RELKD_KAFKA_SASL_MECHANISM and "
                    "RELKD_KAFKA_SASL_USERNAME"
                )
            if self.kafka_sasl_password_file is None:
                raise ValueError(f"kafka_sasl_password_file: {protocol} needs a password file")
            config["sasl_mechanism"] = self.kafka_sasl_mechanism
            config["sasl_plain_username"] = self.kafka_sasl_username
            config["sasl_plain_password"] = self.kafka_sasl_password_file.read_text().strip()
        elif self.kafka_sasl_mechanism:
            raise ValueError(
                f"kafka_sasl_mechanism: set, but kafka_security_protocol is {protocol}; "
                "use SASL_SSL"
            )
        return config


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
