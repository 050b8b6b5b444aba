"""The disagreement monitor: served traffic in, active-learning relabel requests out.

A consumer group on ``relevance.served.v1`` (student-inference's sample of served
requests). For each batch of samples it

1. asks the teacher for the sampled pairs through the teacher-labeling service's
   ``Label`` RPC, in calls of at most ``label_batch_pairs`` pairs and at most
   ``pairs_per_second`` pairs a second (the teacher is the expensive part);
2. measures each pair's gap |student score - teacher expected grade| (both in grade
   units) and publishes a ``disagreement`` request for the pairs whose gap is in the
   top ``top_share`` of the recent gaps (a rolling window of ``gap_window`` pairs) and
   at least ``min_gap``;
3. publishes a ``new_query`` request for each query the label store has never seen
   (once per query per process).

Requests go to ``relevance.relabel-requests.v1`` keyed by query_id, with event ids
derived from their content, so a redelivered sample yields identical requests.
A teacher that is unavailable is retried with backoff, never skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
from prometheus_client import Counter, Gauge
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from relevance.v1 import common_pb2, teacher_labeling_pb2, teacher_labeling_pb2_grpc, topics_pb2

from contracts.topics import RELABEL_REQUESTS, SERVED
from services.core import bus, metrics
from services.core.grpc_security import client_channel
from services.core.grpc_server import GrpcServer
from services.core.rate import RateLimiter
from services.core.settings import Settings
from services.label_store.settings import LabelStoreSettings
from services.label_store.store import LabelStore, SnapshotNotFound

log = logging.getLogger(__name__)

PRODUCER = "disagreement-monitor"
# Teacher errors worth waiting out: the service is restarting, overloaded or has no model yet.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}

PAIRS_JUDGED = Counter("relkd_monitor_pairs_judged_total", "Served pairs the teacher judged.")
REQUESTS = Counter(
    "relkd_monitor_requests_total", "Relabel requests the monitor published.", ["kind"]
)
GAP_THRESHOLD = Gauge(
    "relkd_monitor_gap_threshold",
    "The |student - teacher| gap a pair must reach to be flagged.",
)
# The live signal the distillation controller rolls a promoted student back on
# (RELKD_CONTROLLER_DISAGREEMENT_METRIC): unlike the flagged share, which top_share fixes,
# it rises when the serving student drifts from the teacher.
DISAGREEMENT_RATE = Gauge(
    "relkd_monitor_disagreement_rate",
    "Share of the last gap_window judged served pairs whose |student - teacher| gap is at "
    "least min_gap.",
)


def disagreement_rate(gaps: Sequence[float], min_gap: float) -> float:
    """Share of `gaps` (|student - teacher| per judged pair) at least `min_gap`."""
    return float(np.mean(np.asarray(gaps) >= min_gap)) if len(gaps) else 0.0


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_MONITOR_", extra="ignore")

    group: str = Field("disagreement-monitor", description="Consumer group of the monitor.")
    teacher_address: str = Field(
        "",
        description="teacher-labeling gRPC address (host:port); empty: RELKD_GRPC_HOST and "
        "RELKD_TEACHER_LABELING_PORT.",
    )
    label_batch_pairs: int = Field(
        64, ge=1, le=1024, description="Most pairs per Label call to the teacher."
    )
    pairs_per_second: float = Field(
        50.0, gt=0, description="Most served pairs a second sent to the teacher."
    )
    label_timeout_s: float = Field(60.0, gt=0, description="Deadline of one Label call.")
    teacher_retry_s: float = Field(
        120.0,
        gt=0,
        description="How long an unavailable teacher is retried (with backoff) before the "
        "batch fails; keep it below RELKD_KAFKA_MAX_POLL_INTERVAL_MS.",
    )
    top_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share of the recent pairs, by largest |student - teacher| gap, flagged as "
        "disagreements.",
    )
    min_gap: float = Field(
        0.5, ge=0, description="Smallest gap (in grades) ever flagged, however few pairs disagree."
    )
    gap_window: int = Field(
        2000, ge=1, description="Recent pairs whose gaps set the top-share threshold."
    )
    known_refresh_s: float = Field(
        60.0, gt=0, description="Seconds between re-reads of the label store's known queries."
    )


@dataclass(frozen=True)
class ServedPair:
    query_id: str
    query: str
    product: common_pb2.Product
    student_score: float


class Teacher(Protocol):
    """Expected grades of (query, product) pairs (the teacher-labeling service)."""

    def expected_scores(self, pairs: Sequence[ServedPair]) -> tuple[list[float], str]: ...


class TeacherClient:
    """The teacher-labeling Label RPC, with retries of the errors worth waiting out."""

    def __init__(self, address: str, own: MonitorSettings, settings: Settings) -> None:
        self.address = address
        self.own = own
        # TLS and the caller token as the platform's settings say.
        self._channel = client_channel(address, settings)
        self._stub = teacher_labeling_pb2_grpc.TeacherLabelingStub(self._channel)

    def expected_scores(self, pairs: Sequence[ServedPair]) -> tuple[list[float], str]:
        """The teacher's expected grade of each pair, and the teacher version."""
        request = teacher_labeling_pb2.LabelRequest(
            pairs=[
                teacher_labeling_pb2.LabelPair(
                    query=p.query, product=p.product, query_id=p.query_id
                )
                for p in pairs
            ]
        )
        deadline = time.monotonic() + self.own.teacher_retry_s
        backoff = 0.5
        while True:
            try:
                reply = self._stub.Label(request, timeout=self.own.label_timeout_s)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or time.monotonic() + backoff > deadline:
                    raise
                log.warning(
                    "teacher not available, retrying",
                    extra={"address": self.address, "code": exc.code().name},
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            return [label.expected_score for label in reply.labels], reply.teacher.version

    def close(self) -> None:
        self._channel.close()


class KnownQueries:
    """Query ids with a label in the label store's newest snapshot, re-read at most every
    `refresh_s` seconds (snapshots are cut every few minutes, not per label)."""

    def __init__(self, store: LabelStore, refresh_s: float) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._ids: set[str] = set()
        self._read_at = -math.inf

    def ids(self) -> set[str]:
        if time.monotonic() - self._read_at >= self.refresh_s:
            try:
                self._ids = set(self.store.open().known_queries())
            except SnapshotNotFound:
                self._ids = set()
            self._read_at = time.monotonic()
        return self._ids


def _event_id(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


class DisagreementHandler:
    """Consumer-group handler for served samples (see the module docstring)."""

    def __init__(
        self,
        teacher: Teacher,
        publisher: bus.Publisher,
        own: MonitorSettings,
        known: KnownQueries | None,
    ) -> None:
        self.teacher = teacher
        self.publisher = publisher
        self.own = own
        self.known = known
        self.gaps: deque[float] = deque(maxlen=own.gap_window)
        self.limiter = RateLimiter(own.pairs_per_second)
        self._requested_queries: set[str] = set()

    def __call__(
        self, deliveries: Sequence[bus.Delivery[topics_pb2.ServedSample]]
    ) -> list[bus.Rejection]:
        rejected: list[bus.Rejection] = []
        pairs: dict[tuple[str, str], ServedPair] = {}
        samples: list[topics_pb2.ServedSample] = []
        for delivery in deliveries:
            sample = delivery.message
            problem = _sample_problem(sample)
            if problem:
                rejected.append(bus.Rejection(delivery, problem))
                continue
            samples.append(sample)
            for p in sample.products:
                product = common_pb2.Product(
                    product_id=p.product_id,
                    title=p.title,
                    product_type=p.product_type,
                    brand=p.brand,
                )
                # A pair served twice in one batch is judged once; its latest score counts.
                pairs[(sample.query_id, p.product_id)] = ServedPair(
                    sample.query_id, sample.query, product, p.score
                )
        self._new_queries(samples)
        self._disagreements(list(pairs.values()), samples)
        return rejected

    def _new_queries(self, samples: Sequence[topics_pb2.ServedSample]) -> None:
        if self.known is None:
            return
        known = self.known.ids()
        for sample in samples:
            if sample.query_id in known or sample.query_id in self._requested_queries:
                continue
            meta = bus.event_meta(PRODUCER)
            meta.event_id = _event_id("new_query", sample.query_id)
            request = topics_pb2.RelabelRequest(
                meta=meta,
                new_query=topics_pb2.NewQuery(query_id=sample.query_id, query=sample.query),
            )
            self.publisher.publish(RELABEL_REQUESTS, sample.query_id, request)
            REQUESTS.labels("new_query").inc()
            self._requested_queries.add(sample.query_id)

    def _disagreements(
        self, pairs: Sequence[ServedPair], samples: Sequence[topics_pb2.ServedSample]
    ) -> None:
        if not pairs:
            return
        teacher_scores: list[float] = []
        teacher_version = ""
        step = self.own.label_batch_pairs
        for start in range(0, len(pairs), step):
            chunk = pairs[start : start + step]
            self.limiter.acquire(len(chunk))
            scores, teacher_version = self.teacher.expected_scores(chunk)
            teacher_scores += scores
        PAIRS_JUDGED.inc(len(pairs))
        gaps = np.abs(np.array([p.student_score for p in pairs]) - np.array(teacher_scores))
        self.gaps.extend(gaps.tolist())
        DISAGREEMENT_RATE.set(disagreement_rate(self.gaps, self.own.min_gap))
        threshold = max(
            float(np.quantile(np.array(self.gaps), 1.0 - self.own.top_share)), self.own.min_gap
        )
        GAP_THRESHOLD.set(threshold)
        student = {s.query_id: s.student for s in samples}
        for pair, teacher_score, gap in zip(pairs, teacher_scores, gaps, strict=True):
            if gap < threshold:
                continue
            model = student[pair.query_id]
            meta = bus.event_meta(PRODUCER)
            meta.event_id = _event_id(
                "disagreement",
                pair.query_id,
                pair.product.product_id,
                model.name,
                model.version,
                teacher_version,
            )
            request = topics_pb2.RelabelRequest(
                meta=meta,
                disagreement=topics_pb2.Disagreement(
                    query_id=pair.query_id,
                    query=pair.query,
                    product_id=pair.product.product_id,
                    student_score=pair.student_score,
                    teacher_score=teacher_score,
                ),
            )
            self.publisher.publish(RELABEL_REQUESTS, pair.query_id, request)
            REQUESTS.labels("disagreement").inc()


def _sample_problem(sample: topics_pb2.ServedSample) -> str:
    if not sample.query_id:
        return "query_id: must not be empty"
    if not sample.query.strip():
        return "query: must not be empty"
    for i, product in enumerate(sample.products):
        if not product.product_id or not product.title.strip():
            return f"products[{i}]: product_id and title are required"
    return ""


async def serve(settings: Settings) -> None:
    """Runs the monitor's consumer group (and a health-only gRPC server) until a signal."""
    own = MonitorSettings()
    if not settings.kafka_bootstrap:
        raise ValueError("kafka_bootstrap: the disagreement monitor needs RELKD_KAFKA_BOOTSTRAP")
    address = own.teacher_address or f"{settings.grpc_host}:{settings.teacher_labeling_port}"
    teacher = TeacherClient(address, own, settings)
    known = KnownQueries(LabelStore(LabelStoreSettings().dir), own.known_refresh_s)
    publisher = bus.Publisher(settings)
    loop = bus.ConsumerLoop(
        settings, SERVED, own.group, DisagreementHandler(teacher, publisher, own, known), publisher
    )
    worker = threading.Thread(target=loop.run, name="disagreement-monitor", daemon=True)
    worker.start()
    # Health only: the monitor has no RPCs, but `relkd up` and Kubernetes probe it.
    server = GrpcServer.from_settings([], settings, settings.disagreement_monitor_port)
    metrics.start_metrics_server(settings.metrics_port, settings.grpc_host)

    async def drain() -> None:
        loop.stop()
        await asyncio.to_thread(worker.join)
        publisher.close()
        teacher.close()

    await server.serve_until_signal(on_stop=drain)
