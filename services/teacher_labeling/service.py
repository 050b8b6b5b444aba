"""Teacher labeling: turns candidate batches into teacher labels.

Two ways in, one model:

* the ``relevance.v1.TeacherLabeling/Label`` RPC for ad-hoc scoring;
* a consumer group on ``relevance.candidates.v1`` that labels every candidate pair
  and publishes one ``LabelRecord`` per pair to ``relevance.labels.v1``, keyed by the
  pair so the compacted topic keeps the newest label. The same pair and teacher
  version always produce the same key, event id and label, so redelivery after a
  crash rewrites identical records.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
from prometheus_client import Counter, Histogram
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from relevance.v1 import common_pb2, teacher_labeling_pb2, teacher_labeling_pb2_grpc, topics_pb2

from contracts.artifacts import TEACHER_JSON
from contracts.identity import ModelRef
from contracts.products import InvalidProduct, product_row, validate_product, validate_products
from contracts.topics import CANDIDATES, LABELS, pair_key
from services.core import bus, metrics
from services.core.grpc_server import (
    FailedPrecondition,
    GrpcServer,
    InvalidArgument,
    ServiceBinding,
    require,
    require_count,
    require_unique,
)
from services.core.settings import Settings

log = logging.getLogger(__name__)

PAIRS_LABELED = Counter("relkd_teacher_pairs_total", "Pairs labeled by the teacher.", ["path"])
RATIONALE_LABELS = Counter(
    "relkd_teacher_rationale_labels_total",
    "Labels published to relevance.labels.v1 with a rationale (per-field distributions), "
    "the chain-of-thought targets of the students; relkd_teacher_pairs_total{path=topic} "
    "minus this = labels published without one.",
)
BATCH_PAIRS = Histogram(
    "relkd_teacher_batch_pairs",
    "Pairs per consumed batch handed to the teacher (how full the micro-batches can be).",
    buckets=(1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
EXPLAINED_PAIRS = Counter(
    "relkd_teacher_explained_pairs_total",
    "Pairs labeled with a rationale by a generative teacher, by outcome: `malformed` where "
    "its free decoding would have left the judgment's schema (the closed-set decoder still "
    "labels them); malformed / all is the malformed share.",
    ["outcome"],
)
TEACHER_RELOADS = Counter(
    "relkd_teacher_reloads_total", "New teachers loaded in place from the checkpoint directory."
)

SERVICE_NAME = "relevance.v1.TeacherLabeling"
PRODUCER = "teacher-labeling"


class TeacherLabelingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_", extra="ignore")

    teacher_checkpoint: Path | None = Field(
        None, description="Teacher checkpoint directory; unset: the service has no model."
    )
    teacher_group: str = Field(
        "teacher-labeling", description="Consumer group of the labeling workers."
    )
    label_max_pairs: int = Field(1024, ge=1, description="Most pairs one Label RPC may carry.")
    label_max_product_items: int = Field(
        64,
        ge=0,
        description="Most `features`, and most `attributes`, one product of a Label pair "
        "may carry.",
    )
    teacher_reload_check_s: float = Field(
        10.0,
        gt=0,
        description="How often the service checks the teacher checkpoint's teacher.json for "
        "a new teacher (written in place by a rollout), which it then loads without a restart.",
    )
    teacher_max_tokens: int = Field(
        0,
        ge=0,
        description="Token budget of one teacher forward pass (rows x padded length); 0 sizes "
        "it from the device's free memory when the teacher loads (a CPU gets 16384).",
    )
    teacher_explain: bool = Field(
        True,
        description="Candidate topic: ask a generative teacher for its step-by-step judgment "
        "(four scoring passes per pair instead of one), so its labels carry rationale "
        "distributions and relkd_teacher_explained_pairs_total counts the malformed share. A "
        "classifier teacher gives its rationale heads' distributions either way.",
    )
    teacher_poll_batches: int = Field(
        16,
        ge=1,
        description="Candidate batches one labeling step takes from Kafka. Labels are "
        "published when a step ends and the next poll waits for it, so a step must stay well "
        "inside the poll interval: with the default 500 one step could hold thousands of "
        "pairs and publish nothing for minutes.",
    )


class Labeler(Protocol):
    """What the service needs of a teacher (training.teacher.labeler.TeacherLabeler)."""

    name: str
    version: str

    def label(
        self, pairs: Sequence[tuple[str, Mapping[str, Any]]], explain: bool = False
    ) -> list[Any]: ...


def _rationale(label: Any) -> common_pb2.Rationale | None:
    """The label's rationale with its per-field distributions; None (the field stays
    absent) when the teacher stated none."""
    rationale = getattr(label, "rationale", None)
    if rationale is None:
        return None
    probs = rationale.probs or ((), (), ())
    return common_pb2.Rationale(
        category_match=int(rationale.category_match),
        brand_match=int(rationale.brand_match),
        attribute_match=int(rationale.attribute_match),
        text=rationale.text,
        category_probs=probs[0],
        brand_probs=probs[1],
        attribute_probs=probs[2],
    )


class ReloadingLabeler:
    """The teacher of one checkpoint directory, reloaded when its ``teacher.json`` changes.

    A rollout writes a new teacher into the directory (``teacher.json`` last); the next
    :meth:`current` after ``check_s`` loads it. A teacher that fails to load (still being
    written, say) leaves the current one in place until the next check.
    """

    def __init__(self, path: Path, check_s: float, max_tokens: int = 0) -> None:
        self.path = Path(path)
        self.check_s = check_s
        self.max_tokens = max_tokens
        self._spec = self.path / TEACHER_JSON
        self._stamp = self._spec.stat().st_mtime_ns
        self._labeler = load_labeler(self.path, max_tokens)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def current(self) -> Labeler:
        """The teacher to label with now; callers read its name and version from it."""
        with self._lock:
            if time.monotonic() - self._checked >= self.check_s:
                self._checked = time.monotonic()
                self._reload_if_changed()
            return self._labeler

    def _reload_if_changed(self) -> None:
        try:
            stamp = self._spec.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if stamp == self._stamp:
            return
        try:
            labeler = load_labeler(self.path, self.max_tokens)
        except Exception:
            log.exception("new teacher failed to load; keeping the current one")
            return
        log.info(
            "teacher reloaded",
            extra={"old": self._labeler.version, "new": labeler.version, "path": str(self.path)},
        )
        self._labeler, self._stamp = labeler, stamp
        TEACHER_RELOADS.inc()


def label_pairs(
    labeler: Labeler, pairs: Sequence[tuple[str, Mapping[str, Any]]], explain: bool = False
) -> list[Any]:
    """``labeler.label`` that exports the explained pairs' outcomes as metrics."""
    stats = getattr(labeler, "stats", None)
    before = (stats.explained, stats.malformed_generations) if stats else (0, 0)
    labels = labeler.label(pairs, explain)
    if stats is not None:
        malformed = stats.malformed_generations - before[1]
        EXPLAINED_PAIRS.labels("malformed").inc(malformed)
        EXPLAINED_PAIRS.labels("well_formed").inc(stats.explained - before[0] - malformed)
    return labels


def current_labeler(labeler: Labeler | ReloadingLabeler) -> Labeler:
    """One consistent teacher for one labeling call (a reload may swap it between calls)."""
    return labeler.current() if isinstance(labeler, ReloadingLabeler) else labeler


class TeacherLabelingServicer(teacher_labeling_pb2_grpc.TeacherLabelingServicer):
    def __init__(
        self,
        labeler: Labeler | ReloadingLabeler | None,
        max_pairs: int,
        max_product_items: int = 64,
    ) -> None:
        self.labeler = labeler
        self.max_pairs = max_pairs
        self.max_product_items = max_product_items

    def _require_model(self) -> Labeler | ReloadingLabeler:
        if self.labeler is None:
            raise FailedPrecondition("no teacher model loaded (set RELKD_TEACHER_CHECKPOINT)")
        return self.labeler

    async def Label(
        self, request: teacher_labeling_pb2.LabelRequest, context: grpc.aio.ServicerContext
    ) -> teacher_labeling_pb2.LabelResponse:
        require_count(len(request.pairs), self.max_pairs, "pairs", "RELKD_LABEL_MAX_PAIRS")
        for i, pair in enumerate(request.pairs):
            require(bool(pair.query.strip()), f"pairs[{i}].query", "must not be empty")
            try:
                validate_product(pair.product, f"pairs[{i}].product")
            except InvalidProduct as error:
                raise InvalidArgument(error.field, error.problem) from None
            product = pair.product
            require(
                len(product.features) <= self.max_product_items,
                f"pairs[{i}].product.features",
                f"at most {self.max_product_items} (RELKD_LABEL_MAX_PRODUCT_ITEMS), "
                f"got {len(product.features)}",
            )
            require(
                len(product.attributes) <= self.max_product_items,
                f"pairs[{i}].product.attributes",
                f"at most {self.max_product_items} (RELKD_LABEL_MAX_PRODUCT_ITEMS), "
                f"got {len(product.attributes)}",
            )
        require_unique(
            [(p.query.strip(), p.product.product_id) for p in request.pairs],
            lambda i: f"pairs[{i}]",
        )
        labeler = current_labeler(self._require_model())
        inputs = [(p.query, product_row(p.product)) for p in request.pairs]
        labels = await asyncio.to_thread(label_pairs, labeler, inputs, request.explain)
        PAIRS_LABELED.labels("rpc").inc(len(inputs))
        return teacher_labeling_pb2.LabelResponse(
            labels=[
                teacher_labeling_pb2.PairLabel(
                    query_id=pair.query_id,
                    product_id=pair.product.product_id,
                    grades=common_pb2.GradeDistribution(probs=label.grade_probs),
                    expected_score=label.expected_score,
                    rationale=_rationale(label),
                )
                for pair, label in zip(request.pairs, labels, strict=True)
            ],
            teacher=ModelRef(name=labeler.name, version=labeler.version).to_proto(),
        )


class CandidateLabelingHandler:
    """The consumer side: labels candidate batches and publishes one label per pair."""

    def __init__(
        self,
        labeler: Labeler | ReloadingLabeler,
        publisher: bus.Publisher,
        explain: bool = True,
    ) -> None:
        self.labeler = labeler
        self.publisher = publisher
        self.explain = explain

    def __call__(
        self, deliveries: Sequence[bus.Delivery[topics_pb2.CandidateBatch]]
    ) -> list[bus.Rejection]:
        rejected: list[bus.Rejection] = []
        pairs: list[tuple[topics_pb2.CandidateBatch, common_pb2.Product]] = []
        for delivery in deliveries:
            problem = self._problem(delivery.message)
            if problem:
                rejected.append(bus.Rejection(delivery, problem))
                continue
            pairs.extend((delivery.message, product) for product in delivery.message.products)
        if pairs:
            labeler = current_labeler(self.labeler)
            teacher = ModelRef(name=labeler.name, version=labeler.version).to_proto()
            labels = label_pairs(
                labeler, [(batch.query, product_row(p)) for batch, p in pairs], self.explain
            )
            PAIRS_LABELED.labels("topic").inc(len(pairs))
            BATCH_PAIRS.observe(len(pairs))
            for (batch, product), label in zip(pairs, labels, strict=True):
                self._publish(batch, product, label, teacher)
            RATIONALE_LABELS.inc(sum(1 for label in labels if label.rationale is not None))
        return rejected

    @staticmethod
    def _problem(batch: topics_pb2.CandidateBatch) -> str:
        if not batch.query_id:
            return "query_id: must not be empty"
        if not batch.query.strip():
            return "query: must not be empty"
        if not batch.products:
            return "products: must hold at least one product"
        try:
            validate_products(batch.products)
        except InvalidProduct as error:
            return str(error)
        return ""

    def _publish(
        self,
        batch: topics_pb2.CandidateBatch,
        product: common_pb2.Product,
        label: Any,
        teacher: common_pb2.ModelRef,
    ) -> None:
        key = pair_key(batch.query_id, product.product_id)
        meta = bus.event_meta(PRODUCER)
        # Deterministic id: a redelivered candidate yields a byte-identical label record
        # apart from its timestamp, so consumers can de-duplicate on event_id.
        meta.event_id = hashlib.sha1(f"{key}|{teacher.version}".encode()).hexdigest()
        record = topics_pb2.LabelRecord(
            meta=meta,
            pair_key=key,
            query_id=batch.query_id,
            query=batch.query,
            product_id=product.product_id,
            grades=common_pb2.GradeDistribution(probs=label.grade_probs),
            expected_score=label.expected_score,
            teacher=teacher,
            rationale=_rationale(label),
        )
        self.publisher.publish(LABELS, key, record)


def labeling_loop(
    settings: Settings,
    own: TeacherLabelingSettings,
    labeler: Labeler | ReloadingLabeler,
    publisher: bus.Publisher,
) -> bus.ConsumerLoop:
    """The labeling workers' consumer of the candidates topic, in bounded steps."""
    return bus.ConsumerLoop(
        settings,
        CANDIDATES,
        own.teacher_group,
        CandidateLabelingHandler(labeler, publisher, own.teacher_explain),
        publisher,
        max_poll_records=own.teacher_poll_batches,
    )


def load_labeler(path: Path | None, max_tokens: int = 0) -> Labeler | None:
    """The teacher at ``path``; ``max_tokens`` 0 sizes its batches from free device memory."""
    if path is None:
        return None
    from training.teacher.labeler import TeacherLabeler

    return TeacherLabeler.from_checkpoint(path, max_tokens=max_tokens or None)


async def serve(settings: Settings) -> None:
    """Runs the gRPC service and, when a teacher is loaded, the labeling workers."""
    own = TeacherLabelingSettings()
    labeler = (
        ReloadingLabeler(own.teacher_checkpoint, own.teacher_reload_check_s, own.teacher_max_tokens)
        if own.teacher_checkpoint is not None
        else None
    )
    server = GrpcServer.from_settings(
        [
            ServiceBinding(
                SERVICE_NAME,
                TeacherLabelingServicer(labeler, own.label_max_pairs, own.label_max_product_items),
                teacher_labeling_pb2_grpc.add_TeacherLabelingServicer_to_server,
            )
        ],
        settings,
        settings.teacher_labeling_port,
    )
    metrics.start_metrics_server(settings.metrics_port, settings.grpc_host)
    consumers: list[bus.BackgroundConsumer] = []
    if labeler is not None and settings.kafka_bootstrap:
        publisher = bus.Publisher(settings)
        loop = labeling_loop(settings, own, labeler, publisher)
        consumers.append(bus.BackgroundConsumer(loop, publisher, "labeling-worker"))
    else:
        log.warning(
            "labeling workers not started",
            extra={"model": labeler is not None, "kafka": bool(settings.kafka_bootstrap)},
        )
    await server.serve_until_signal(background=consumers)
