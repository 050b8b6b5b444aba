"""Triton is one of the platform's gRPC servers: with the RELKD_GRPC_TLS_* settings of
`relkd certs generate` it serves TLS with client verification, and student-inference
reaches it over mTLS; a plaintext client cannot."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from relevance.v1 import student_inference_pb2, student_inference_pb2_grpc
from tritonclient.utils import InferenceServerException

from ops.certs import generate
from services.student_inference.backends import triton_env
from services.student_inference.triton_runtime import TritonServer
from training.export.triton_repo import write_cpu_repository

pytestmark = pytest.mark.integration

MODEL_NAME = "ce"


def test_student_inference_reaches_triton_over_mtls(
    triton_install: object,
    cross_encoder_exports: dict[str, tuple[Path, Path]],
    start_service: Callable[[Mapping[str, str]], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in generate(tmp_path / "certs").env(mtls=True).items():
        monkeypatch.setenv(name, value)
    repository = tmp_path / "repo"
    write_cpu_repository(cross_encoder_exports["1"][1], repository, model_name=MODEL_NAME)
    # Starting at all proves the TLS readiness probe (with the client certificate) works.
    with TritonServer(repository, load_models=(MODEL_NAME,)) as server:
        address = start_service(triton_env(server, MODEL_NAME))
        request = student_inference_pb2.ScoreRequest(
            query="grey sofa",
            products=[
                {"product_id": "a", "title": "grey sofa"},
                {"product_id": "b", "title": "desk"},
            ],
        )
        with grpc.insecure_channel(address) as channel:
            reply = student_inference_pb2_grpc.StudentInferenceStub(channel).Score(
                request, timeout=30
            )
        assert [s.product_id for s in reply.scores] == ["a", "b"]
        assert reply.serving.backend == "triton"

        plaintext = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException) as info:
            plaintext.is_server_ready(client_timeout=5)
        assert info.value.status() == str(grpc.StatusCode.UNAVAILABLE)
