"""Keeping strangers out: a real `relkd serve` process with TLS, mTLS and per-caller
tokens from `relkd certs generate`, called by secured, half-secured and plaintext
clients; and the Kafka clients' SSL/SASL settings."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from relevance.v1 import student_inference_pb2, student_inference_pb2_grpc
from service_processes import start_service, stop_service

from ops.certs import CertificateSet, generate
from ops.stack import health_status
from services.core.broker import free_port
from services.core.grpc_security import client_channel
from services.core.settings import Settings
from services.student_inference.backends import two_tower_env
from training.export.exporter import export_student

pytestmark = pytest.mark.integration

REQUEST = student_inference_pb2.ScoreRequest(
    query="grey sofa",
    products=[
        {"product_id": "p0", "title": "grey fabric sofa"},
        {"product_id": "p1", "title": "desk"},
    ],
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return generate(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def health_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def secured_student(
    certs: CertificateSet,
    health_port: int,
    two_tower_checkpoint: Path,
    products_parquet: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """student-inference with a real two-tower export, TLS, mTLS and tokens."""
    export_dir = tmp_path_factory.mktemp("secured") / "two-tower"
    export_student(two_tower_checkpoint, export_dir, int8=False, products=products_parquet)
    port = free_port()
    env = {
        **certs.env(mtls=True),
        **two_tower_env(export_dir),
        "RELKD_GRPC_HEALTH_PORT": str(health_port),
    }
    process: subprocess.Popen[bytes] = start_service(
        "student-inference", port, env, settings=client_settings(certs)
    )
    yield f"127.0.0.1:{port}"
    assert stop_service(process) == 0


def client_settings(certs: CertificateSet, **overrides: object) -> Settings:
    """Client-side settings of an operator holding the client certificate and token."""
    values: dict[str, object] = {
        "grpc_tls_ca_file": certs.ca,
        "grpc_tls_client_cert_file": certs.client_cert,
        "grpc_tls_client_key_file": certs.client_key,
        "grpc_auth_token_file": certs.token,
    }
    values.update(overrides)
    return Settings(**values)


def score(channel: grpc.Channel) -> student_inference_pb2.ScoreResponse:
    return student_inference_pb2_grpc.StudentInferenceStub(channel).Score(REQUEST, timeout=10)


def score_error(channel: grpc.Channel, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        student_inference_pb2_grpc.StudentInferenceStub(channel).Score(
            REQUEST, timeout=10, **kwargs
        )
    return info.value


def test_tls_client_with_token_is_served(secured_student: str, certs: CertificateSet) -> None:
    with client_channel(secured_student, client_settings(certs)) as channel:
        response = score(channel)
    assert [s.product_id for s in response.scores] == ["p0", "p1"]
    assert response.model.name == "tiny-tt"


def test_health_needs_tls_but_no_token(secured_student: str, certs: CertificateSet) -> None:
    settings = client_settings(certs, grpc_auth_token_file=None)
    assert health_status(secured_student, settings=settings) == "SERVING"


def test_plaintext_health_port_serves_health_and_nothing_else(
    secured_student: str, health_port: int
) -> None:
    """The probe port of a TLS server (Kubernetes' gRPC probe cannot do TLS)."""
    address = f"127.0.0.1:{health_port}"
    plaintext = Settings()
    assert health_status(address, "relevance.v1.StudentInference", settings=plaintext) == "SERVING"
    with grpc.insecure_channel(address) as channel:
        error = score_error(channel, metadata=[("authorization", "Bearer anything")])
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_missing_or_unknown_token_is_unauthenticated(
    secured_student: str, certs: CertificateSet, tmp_path: Path
) -> None:
    with client_channel(secured_student, client_settings(certs, grpc_auth_token_file=None)) as ch:
        error = score_error(ch)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in (error.details() or "")
        wrong = score_error(ch, metadata=[("authorization", "Bearer not-a-known-token")])
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    stolen = tmp_path / "token"
    stolen.write_text(certs.token.read_text()[:-5] + "xxxx\n")
    with client_channel(secured_student, client_settings(certs, grpc_auth_token_file=stolen)) as ch:
        assert score_error(ch).code() == grpc.StatusCode.UNAUTHENTICATED


def test_plaintext_client_cannot_talk_to_a_tls_server(secured_student: str) -> None:
    with grpc.insecure_channel(secured_student) as channel:
        error = score_error(channel, metadata=[("authorization", "Bearer anything")])
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_client_without_a_certificate_is_refused_under_mtls(
    secured_student: str, certs: CertificateSet
) -> None:
    settings = client_settings(certs, grpc_tls_client_cert_file=None, grpc_tls_client_key_file=None)
    with client_channel(secured_student, settings) as channel:
        assert score_error(channel).code() == grpc.StatusCode.UNAVAILABLE


def test_client_trusting_another_ca_refuses_the_server(
    secured_student: str, certs: CertificateSet, tmp_path: Path
) -> None:
    other = generate(tmp_path / "other")
    settings = client_settings(certs, grpc_tls_ca_file=other.ca)
    with client_channel(secured_student, settings) as channel:
        assert score_error(channel).code() == grpc.StatusCode.UNAVAILABLE


def test_token_is_never_sent_in_the_clear(certs: CertificateSet) -> None:
    settings = Settings(grpc_auth_token_file=certs.token)
    with pytest.raises(ValueError, match="grpc_auth_token_file"):
        client_channel("127.0.0.1:1", settings)


def test_kafka_clients_get_ssl_and_scram_settings(certs: CertificateSet, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=certs.ca,
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="teacher-labeling",
        kafka_sasl_password_file=password,
    )
    assert settings.kafka_security() == {
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": str(certs.ca),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "teacher-labeling",
        "sasl_plain_password": "s3cret",
    }
    assert Settings().kafka_security() == {"security_protocol": "PLAINTEXT"}
    with pytest.raises(ValueError, match="kafka_sasl_password_file"):
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="u",
        ).kafka_security()
    with pytest.raises(ValueError, match="kafka_sasl_mechanism"):
        Settings(kafka_sasl_mechanism="SCRAM-SHA-512").kafka_security()
