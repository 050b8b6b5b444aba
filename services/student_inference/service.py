"""Student inference: the low-latency `relevance.v1.StudentInference/Score` RPC.

Thin request handling over a scoring backend (the KServe model-server pattern): the
servicer validates and honours deadlines, the backend runs the student.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from relevance.v1 import student_inference_pb2, student_inference_pb2_grpc

from contracts.identity import ModelRef
from contracts.products import InvalidProduct, validate_products
from services.core import bus, metrics
from services.core.grpc_server import (
    DeadlineExceeded,
    FailedPrecondition,
    GrpcServer,
    InvalidArgument,
    ServiceBinding,
    check_deadline,
    require,
    require_count,
)
from services.core.settings import Settings
from services.student_inference.admission import AdmissionGate
from services.student_inference.served import ServedSampler

SERVICE_NAME = "relevance.v1.StudentInference"


class StudentInferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_", extra="ignore")

    max_products: int = Field(256, description="Most products one Score request may carry.")
    score_max_in_flight: int = Field(
        4,
        ge=1,
        description="Score requests the backend works on at once; more wait in the queue.",
    )
    score_max_queued: int = Field(
        64,
        ge=0,
        description="Score requests that may wait for the backend; beyond it, and when a "
        "request's deadline would pass while waiting, Score answers RESOURCE_EXHAUSTED.",
    )
    student_backend: str = Field(
        "",
        description="Scoring backend: `triton` (a cross-encoder behind Triton), `two-tower` "
        "(precomputed product embeddings, in-process query tower), or empty for none "
        "(Score answers FAILED_PRECONDITION).",
    )
    served_sample_rate: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Share of served Score requests published to relevance.served.v1 for the "
        "disagreement monitor (needs RELKD_KAFKA_BOOTSTRAP); 0 turns sampling off.",
    )


@dataclass(frozen=True)
class ScoreResult:
    scores: list[float]
    # Products whose text the tokenizer cut at the student's maximum length.
    truncated: int
    # The training identity of the student that produced these scores.
    model: ModelRef
    # The deployment of it that answered.
    serving: student_inference_pb2.ServingRevision


class ScoringBackend(Protocol):
    async def score(
        self,
        query: str,
        products: Sequence[student_inference_pb2.ScoreProduct],
        timeout_s: float | None,
    ) -> ScoreResult: ...

    async def close(self) -> None:
        """Releases connections; called once, after the server has stopped."""


class StudentInferenceServicer(student_inference_pb2_grpc.StudentInferenceServicer):
    def __init__(
        self,
        backend: ScoringBackend | None,
        settings: StudentInferenceSettings,
        served: ServedSampler | None = None,
    ) -> None:
        self.backend = backend
        self.max_products = settings.max_products
        self.gate = AdmissionGate(settings.score_max_in_flight, settings.score_max_queued)
        self.served = served

    async def Score(
        self, request: student_inference_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> student_inference_pb2.ScoreResponse:
        require(bool(request.query.strip()), "query", "must not be empty")
        require_count(len(request.products), self.max_products, "products", "RELKD_MAX_PRODUCTS")
        try:
            validate_products(request.products, unique_ids=True)
        except InvalidProduct as error:
            raise InvalidArgument(error.field, error.problem) from None
        if self.backend is None:
            raise FailedPrecondition("no student model loaded (set RELKD_STUDENT_BACKEND)")
        check_deadline(context)
        async with self.gate.admit(context.time_remaining()) as timeout_s:
            try:
                # A timeout scope, not wait_for: no extra task per request.
                async with asyncio.timeout(timeout_s):
                    result = await self.backend.score(request.query, request.products, timeout_s)
            except TimeoutError as exc:
                raise DeadlineExceeded(
                    "the student did not answer within the caller's deadline"
                ) from exc
        response = student_inference_pb2.ScoreResponse(
            model=result.model.to_proto(),
            request_id=request.request_id or uuid.uuid4().hex,
            truncated=result.truncated,
            serving=result.serving,
        )
        # Appended in place: cheaper than building a ProductScore message per product.
        add_score = response.scores.add
        for product, score in zip(request.products, result.scores, strict=True):
            add_score(product_id=product.product_id, score=score)
        if self.served is not None:
            self.served.offer(request, response)
        return response


def load_backend(own: StudentInferenceSettings) -> ScoringBackend | None:
    """The backend RELKD_STUDENT_BACKEND names; each reads its own RELKD_ settings."""
    if not own.student_backend:
        return None
    # Imported on demand: backends imports this module (ScoreResult).
    from services.student_inference.backends import TritonBackend, TwoTowerBackend

    if own.student_backend == "triton":
        return TritonBackend()
    if own.student_backend == "two-tower":
        return TwoTowerBackend()
    raise ValueError(
        f"student_backend: unknown backend {own.student_backend!r}; expected 'triton', "
        "'two-tower' or empty"
    )


def served_sampler(settings: Settings, own: StudentInferenceSettings) -> ServedSampler | None:
    """The sampler of served requests, when there is a Kafka to publish to and a rate."""
    if not settings.kafka_bootstrap or own.served_sample_rate == 0:
        return None
    return ServedSampler(bus.Publisher(settings), own.served_sample_rate)


async def serve(settings: Settings) -> None:
    own = StudentInferenceSettings()
    backend = load_backend(own)
    served = served_sampler(settings, own)
    try:
        server = GrpcServer.from_settings(
            [
                ServiceBinding(
                    SERVICE_NAME,
                    StudentInferenceServicer(backend, own, served),
                    student_inference_pb2_grpc.add_StudentInferenceServicer_to_server,
                )
            ],
            settings,
            settings.student_inference_port,
        )
        metrics.start_metrics_server(settings.metrics_port, settings.grpc_host)
        await server.serve_until_signal()
    finally:
        # After the server has stopped: in-flight Score calls still use the backend.
        if backend is not None:
            await backend.close()
        if served is not None:
            await asyncio.to_thread(served.close)
