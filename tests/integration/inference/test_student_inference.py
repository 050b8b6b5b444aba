"""The student-inference service end to end: a real Triton (CPU, PyPI nvidia-pytriton)
behind the real gRPC service process, and the two-tower backend.

Scores are compared with the torch checkpoint; Triton is killed and restarted under
the service; a new model version is loaded while requests keep arriving.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest
from relevance.v1 import student_inference_pb2, student_inference_pb2_grpc
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from contracts.text import query_id_for
from contracts.topics import SERVED
from services.core.settings import Settings
from services.student_inference import triton_runtime
from services.student_inference.backends import (
    TritonBackend,
    TritonBackendSettings,
    TwoTowerBackend,
    TwoTowerSettings,
    triton_env,
    two_tower_env,
)
from services.student_inference.service import StudentInferenceSettings, load_backend
from services.student_inference.triton_runtime import TritonServer
from training.export.exporter import export_student
from training.export.triton_repo import write_cpu_repository
from training.student.checkpoint import load_student

pytestmark = pytest.mark.integration

StartService = Callable[[Mapping[str, str]], str]
MODEL_NAME = "ce"

QUERY = "grey sofa"
PRODUCTS = [
    {
        "product_id": "long",
        "title": "three-seat grey fabric sofa with a very long description that the "
        "tokenizer cuts at 32 tokens because the student's max_length is small, and more",
    },
    {"product_id": "desk", "title": "oak desk"},
    {"product_id": "lamp", "title": "floor lamp with linen shade"},
]


def score(
    address: str, products: list[dict[str, str]], timeout_s: float = 10.0
) -> student_inference_pb2.ScoreResponse:
    request = student_inference_pb2.ScoreRequest(query=QUERY, products=products)
    with grpc.insecure_channel(address) as channel:
        stub = student_inference_pb2_grpc.StudentInferenceStub(channel)
        return stub.Score(request, timeout=timeout_s)


def torch_scores(checkpoint: Path, products: list[dict[str, str]]) -> np.ndarray:
    return load_student(checkpoint, device="cpu").score_pairs([QUERY] * len(products), products)


def scores_of(response: student_inference_pb2.ScoreResponse) -> np.ndarray:
    return np.array([s.score for s in response.scores])


@pytest.fixture
def triton(
    triton_install: object, cross_encoder_exports: dict[str, tuple[Path, Path]], tmp_path: Path
) -> Iterator[TritonServer]:
    """Triton serving version 1 of the tiny cross-encoder from a fresh repository."""
    repository = tmp_path / "repo"
    write_cpu_repository(cross_encoder_exports["1"][1], repository, model_name=MODEL_NAME)
    with TritonServer(repository, model_control="explicit", load_models=(MODEL_NAME,)) as server:
        yield server


def test_scores_match_torch_and_survive_a_triton_restart(
    triton: TritonServer,
    cross_encoder_exports: dict[str, tuple[Path, Path]],
    start_service: StartService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkpoint = cross_encoder_exports["1"][0]
    address = start_service(triton_env(triton, MODEL_NAME))

    response = score(address, PRODUCTS)
    assert [s.product_id for s in response.scores] == [p["product_id"] for p in PRODUCTS]
    np.testing.assert_allclose(scores_of(response), torch_scores(checkpoint, PRODUCTS), atol=1e-4)
    # The reply names the training run (student.json) and, apart, the Triton deployment.
    assert (response.model.name, response.model.version) == ("tiny-ce", "1")
    assert response.serving == student_inference_pb2.ServingRevision(
        backend="triton", model=MODEL_NAME, version="1"
    )
    tokenizer = AutoTokenizer.from_pretrained(checkpoint / "model")
    too_long = sum(len(tokenizer(QUERY, p["title"])["input_ids"]) > 32 for p in PRODUCTS)
    assert too_long == 1
    assert response.truncated == too_long

    ports = (triton.http_port, triton.grpc_port, triton.metrics_port)
    triton.stop()
    # The caller's deadline is generous: an UNAVAILABLE (not DEADLINE_EXCEEDED) shows
    # the service answered on its own instead of hanging until the caller gave up.
    with pytest.raises(grpc.RpcError) as info:
        score(address, PRODUCTS, timeout_s=20.0)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Triton" in (info.value.details() or "")

    # Restart on the same ports, as a restarted pod behind the same Service would be.
    reuse = iter(ports)
    monkeypatch.setattr(triton_runtime, "free_port", lambda host="127.0.0.1": next(reuse))
    triton.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            response = score(address, PRODUCTS)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
            assert time.monotonic() < deadline, "scoring did not resume after Triton returned"
            time.sleep(0.2)
    np.testing.assert_allclose(scores_of(response), torch_scores(checkpoint, PRODUCTS), atol=1e-4)


def test_version_switch_under_load_fails_no_request(
    triton: TritonServer,
    cross_encoder_exports: dict[str, tuple[Path, Path]],
    start_service: StartService,
) -> None:
    address = start_service(triton_env(triton, MODEL_NAME))
    stop = threading.Event()
    seen: list[tuple[str, str, np.ndarray]] = []
    failures: list[str] = []

    def client() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = student_inference_pb2_grpc.StudentInferenceStub(channel)
            request = student_inference_pb2.ScoreRequest(query=QUERY, products=PRODUCTS)
            while not stop.is_set():
                try:
                    response = stub.Score(request, timeout=10)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                else:
                    seen.append(
                        (response.model.version, response.serving.version, scores_of(response))
                    )

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client) for _ in range(4)]
        while not seen:
            time.sleep(0.05)
        write_cpu_repository(
            cross_encoder_exports["2"][1], triton.model_repository, model_name=MODEL_NAME
        )
        triton.load_model(MODEL_NAME)
        switched_at = len(seen)
        deadline = time.monotonic() + 30
        while not any(v == "2" for _, v, _ in seen[switched_at:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Keep the load on for a moment after the switch: the old version's unload.
        time.sleep(1.0)
        stop.set()
        for future in clients:
            future.result()

    assert failures == []
    served = [v for _, v, _ in seen]
    assert served[0] == "1" and served[-1] == "2"
    assert set(served) == {"1", "2"}
    # Every reply, including those around the switch, names the training run whose
    # checkpoint gives its scores (the two runs were trained with different seeds).
    expected = {v: torch_scores(cross_encoder_exports[v][0], PRODUCTS) for v in ("1", "2")}
    for trained, triton_version, scores in seen:
        assert trained == triton_version
        np.testing.assert_allclose(scores, expected[trained], atol=1e-4)


def test_two_tower_backend_returns_checkpoint_scores(
    two_tower_checkpoint: Path,
    products_parquet: Path,
    start_service: StartService,
    tmp_path: Path,
) -> None:
    export_dir = tmp_path / "two-tower"
    export_student(two_tower_checkpoint, export_dir, int8=False, products=products_parquet)
    address = start_service(two_tower_env(export_dir))
    products = [
        {"product_id": "p0", "title": "grey fabric sofa", "brand": "acme"},
        {"product_id": "p3", "title": "wool rug", "brand": "zenith"},
        {"product_id": "p1", "title": "oak desk"},
    ]

    response = score(address, products)
    expected = torch_scores(two_tower_checkpoint, products)
    np.testing.assert_allclose(scores_of(response), expected, atol=1e-4)
    assert (response.model.name, response.model.version) == ("tiny-tt", "1")
    assert response.serving.backend == "two-tower"
    assert response.serving.model == str(export_dir.resolve())
    assert response.truncated == 0
    # The serving revision tells exports of one training run against two catalogs apart.
    fewer = tmp_path / "fewer-products.parquet"
    pq.write_table(pq.read_table(products_parquet).slice(0, 3), fewer)
    other_catalog = tmp_path / "two-tower-fewer"
    export_student(two_tower_checkpoint, other_catalog, int8=False, products=fewer)
    same = TwoTowerBackend(TwoTowerSettings(student_export_dir=export_dir))
    other = TwoTowerBackend(TwoTowerSettings(student_export_dir=other_catalog))
    assert same.serving.version == response.serving.version
    assert other.serving.version != same.serving.version
    assert other.spec.model_ref == same.spec.model_ref

    with pytest.raises(grpc.RpcError) as info:
        score(address, [products[0], {"product_id": "nowhere", "title": "a new sofa"}])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("products[1].product_id")


def test_served_requests_are_sampled_to_the_served_topic(
    two_tower_checkpoint: Path,
    products_parquet: Path,
    start_service: StartService,
    settings: Settings,
    read_topic,
    tmp_path: Path,
) -> None:
    export_dir = tmp_path / "two-tower"
    export_student(two_tower_checkpoint, export_dir, int8=False, products=products_parquet)
    address = start_service(
        {
            **two_tower_env(export_dir),
            "RELKD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "RELKD_SERVED_SAMPLE_RATE": "1",
        }
    )
    products = [
        {"product_id": "p0", "title": "grey fabric sofa"},
        {"product_id": "p1", "title": "oak desk"},
    ]
    request_id = uuid.uuid4().hex
    request = student_inference_pb2.ScoreRequest(
        query=QUERY, products=products, request_id=request_id
    )
    with grpc.insecure_channel(address) as channel:
        response = student_inference_pb2_grpc.StudentInferenceStub(channel).Score(
            request, timeout=10
        )
    # The producer sends on its own thread; everything on the shared topic for a few seconds.
    samples = [
        m for m in read_topic(SERVED, expect=10**6, timeout_s=5) if m.request_id == request_id
    ]
    assert len(samples) == 1
    [sample] = samples
    assert sample.query == QUERY and sample.query_id == query_id_for(QUERY)
    assert [(p.product_id, p.title) for p in sample.products] == [
        (p["product_id"], p["title"]) for p in products
    ]
    np.testing.assert_allclose([p.score for p in sample.products], scores_of(response))
    assert sample.student == response.model


def test_backend_selection_and_unservable_students_are_clear_errors(
    tmp_path: Path, minilm_tokenizer: PreTrainedTokenizerBase
) -> None:
    with pytest.raises(ValueError, match="student_backend: unknown backend 'onnx'"):
        load_backend(StudentInferenceSettings(student_backend="onnx"))

    version_dir = tmp_path / MODEL_NAME / "3"
    minilm_tokenizer.save_pretrained(version_dir)
    spec = {
        "kind": "cross-encoder",
        "name": MODEL_NAME,
        "version": "3",
        "max_length": 32,
        "text_fields": ["title", "description"],
    }
    (version_dir / "student.json").write_text(json.dumps(spec))
    settings = TritonBackendSettings(triton_model_repository=tmp_path, student_model=MODEL_NAME)
    with pytest.raises(ValueError, match=r"text_fields \['description'\] are not carried"):
        TritonBackend(settings)
