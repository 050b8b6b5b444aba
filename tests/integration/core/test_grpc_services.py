"""Real gRPC servers on free loopback ports: health, reflection, validation errors
that name the field, FAILED_PRECONDITION without a model, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from relevance.v1 import (
    common_pb2,
    student_inference_pb2,
    student_inference_pb2_grpc,
    teacher_labeling_pb2,
    teacher_labeling_pb2_grpc,
)
from service_processes import start_service

from ops.stack import health_status, reflected_services
from services.core.broker import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def student_inference() -> Iterator[str]:
    port = free_port()
    process = start_service("student-inference", port)
    yield f"127.0.0.1:{port}"
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(15)


def score(address: str, request: student_inference_pb2.ScoreRequest) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
        student_inference_pb2_grpc.StudentInferenceStub(channel).Score(request, timeout=5)
    return info.value


def test_health_and_reflection(student_inference: str) -> None:
    assert health_status(student_inference) == "SERVING"
    assert health_status(student_inference, "relevance.v1.StudentInference") == "SERVING"
    assert health_status(student_inference, "relevance.v1.NoSuchService") == "NOT_FOUND"
    listed = reflected_services(student_inference)
    assert "relevance.v1.StudentInference" in listed
    assert "grpc.health.v1.Health" in listed


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            student_inference_pb2.ScoreRequest(
                query="  ", products=[{"product_id": "p", "title": "t"}]
            ),
            "query",
        ),
        (student_inference_pb2.ScoreRequest(query="sofa"), "products"),
        (
            student_inference_pb2.ScoreRequest(
                query="sofa", products=[{"product_id": "p", "title": "t"}] * 257
            ),
            "products",
        ),
        (
            student_inference_pb2.ScoreRequest(
                query="sofa",
                products=[{"product_id": "p", "title": "t"}, {"product_id": "q", "title": ""}],
            ),
            "products[1].title",
        ),
        (
            student_inference_pb2.ScoreRequest(query="sofa", products=[{"title": "t"}]),
            "products[0].product_id",
        ),
    ],
)
def test_invalid_requests_name_the_field(
    student_inference: str, request_: student_inference_pb2.ScoreRequest, field: str
) -> None:
    error = score(student_inference, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}: ")


def test_no_model_is_failed_precondition_not_a_made_up_score(student_inference: str) -> None:
    request = student_inference_pb2.ScoreRequest(
        query="sofa", products=[{"product_id": "p", "title": "Grey sofa"}]
    )
    error = score(student_inference, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no student model loaded" in error.details()


def test_teacher_without_model_and_graceful_stop() -> None:
    port = free_port()
    process = start_service("teacher-labeling", port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = teacher_labeling_pb2_grpc.TeacherLabelingStub(channel)
            pair = teacher_labeling_pb2.LabelPair(
                query="sofa", product=common_pb2.Product(product_id="p", title="Sofa")
            )
            with pytest.raises(grpc.RpcError) as info:
                stub.Label(teacher_labeling_pb2.LabelRequest(pairs=[pair]), timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no teacher model loaded" in info.value.details()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(15) == 0, "SIGTERM must stop the service cleanly"


def test_a_second_server_on_a_taken_port_fails_clearly(student_inference: str) -> None:
    """SO_REUSEPORT is off: two servers never split one port's traffic between them."""
    port = int(student_inference.rsplit(":", 1)[1])
    second = subprocess.Popen(
        [sys.executable, "-m", "ops", "serve", "student-inference"],
        env={**os.environ, "RELKD_STUDENT_INFERENCE_PORT": str(port)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        code = second.wait(60)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert code != 0
    assert f"could not bind gRPC server to 127.0.0.1:{port}: the port is in use" in (
        second.stderr.read().decode()
    )
    assert health_status(student_inference) == "SERVING"
