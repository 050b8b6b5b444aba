"""The Kafka bus every service uses: a publisher and an at-least-once consumer loop.

Guarantees, and how they are kept:

* **Nothing published is lost**: the producer is idempotent with ``acks=all``, and
  :meth:`Publisher.flush` waits for every acknowledgement.
* **Nothing consumed is lost** (at-least-once): offsets are committed manually, only
  after a batch's results *and* its dead letters were published and flushed. A
  consumer killed mid-batch leaves its offsets where they were, so its replacement
  processes that batch again; outputs are keyed so reprocessing is idempotent.
* **Poison messages do not block a partition**: a message that cannot be decoded,
  or whose processing fails on its own, goes to ``relevance.dlq.v1`` with the
  payload, its origin and the reason, and its offset is committed.
* **Graceful shutdown**: :meth:`ConsumerLoop.stop` lets the batch in flight finish
  and commit, then leaves the group.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError
from prometheus_client import Counter
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import DLQ, Topic
from services.core import metrics
from services.core.settings import Settings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


def event_meta(producer: str) -> common_pb2.EventMeta:
    """A fresh envelope for a topic payload."""
    produced_at = Timestamp()
    produced_at.GetCurrentTime()
    return common_pb2.EventMeta(
        event_id=uuid.uuid4().hex, producer=producer, produced_at=produced_at
    )


class Publisher:
    """Publishes protobuf messages to topics with an idempotent, ``acks=all`` producer."""

    def __init__(self, settings: Settings, bootstrap: str | None = None, **producer_config: object):
        config: dict[str, object] = {
            "bootstrap_servers": bootstrap or settings.kafka_bootstrap,
            "client_id": f"{settings.kafka_client_id}-producer",
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": settings.kafka_linger_ms,
            "retries": 10,
            **settings.kafka_security(),
        }
        config.update(producer_config)
        self._producer = KafkaProducer(**config)
        self._published: dict[str, Counter] = {}
        self._unflushed = 0

    def publish(self, topic: Topic, key: str, message: Message) -> None:
        """Queues one message; call :meth:`flush` before acting on its delivery."""
        if not isinstance(message, topic.message_type):
            raise TypeError(
                f"{topic.name} carries {topic.message_type.DESCRIPTOR.full_name}, "
                f"not {message.DESCRIPTOR.full_name}"
            )
        self._producer.send(topic.name, key=key.encode(), value=message.SerializeToString())
        self._unflushed += 1
        counter = self._published.get(topic.name)
        if counter is None:
            counter = self._published[topic.name] = metrics.PUBLISHED.labels(topic.name)
        counter.inc()

    def flush(self, timeout_s: float | None = None) -> None:
        """Blocks until every queued message is acknowledged; raises if one failed."""
        # A consumer loop flushes after every batch; most batches of a pure sink publish
        # nothing, and waking the sender thread for nothing costs ~10% of its throughput.
        if self._unflushed:
            self._producer.flush(timeout=timeout_s)
            self._unflushed = 0

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M]):
    """A decoded message with where it came from."""

    record: ConsumerRecord
    message: M

    @property
    def key(self) -> str:
        return self.record.key.decode() if self.record.key else ""


@dataclass(frozen=True)
class Rejection:
    """A message the handler refuses (invalid content): it goes to the dead-letter topic."""

    delivery: Delivery
    reason: str
    error_type: str = "ValidationError"


# A handler processes one batch and publishes its results; it returns the messages
# it rejects as invalid. An exception means "this batch failed": the loop then
# retries the messages one at a time to isolate the poison one.
BatchHandler = Callable[[Sequence[Delivery[M]]], Sequence[Rejection]]


class ConsumerLoop(Generic[M]):
    """Consumes a topic as a consumer group, at least once, with dead-lettering."""

    def __init__(
        self,
        settings: Settings,
        topic: Topic,
        group_id: str,
        handler: BatchHandler[M],
        publisher: Publisher,
        bootstrap: str | None = None,
        max_poll_records: int | None = None,
        poll_timeout_ms: int = 500,
        **consumer_config: object,
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self._handler = handler
        self._publisher = publisher
        self._poll_timeout_ms = poll_timeout_ms
        self._stop = threading.Event()
        config: dict[str, object] = {
            "bootstrap_servers": bootstrap or settings.kafka_bootstrap,
            "client_id": f"{settings.kafka_client_id}-{group_id}",
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": settings.kafka_session_timeout_ms,
            "heartbeat_interval_ms": max(settings.kafka_session_timeout_ms // 6, 100),
            "max_poll_records": max_poll_records or settings.kafka_max_poll_records,
            "max_poll_interval_ms": settings.kafka_max_poll_interval_ms,
            **settings.kafka_security(),
        }
        if settings.kafka_group_instance_id:
            config["group_instance_id"] = settings.kafka_group_instance_id
        config.update(consumer_config)
        self._consumer = KafkaConsumer(topic.name, **config)
        self.processed = 0
        self.dead_lettered = 0

    def stop(self) -> None:
        """Asks the loop to finish its current batch, commit it and leave the group."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, max_batches: int | None = None) -> None:
        """Polls and processes batches until :meth:`stop` (or `max_batches` non-empty batches)."""
        batches = 0
        try:
            while not self._stop.is_set() and (max_batches is None or batches < max_batches):
                polled = self._consumer.poll(timeout_ms=self._poll_timeout_ms)
                if not any(polled.values()):
                    continue
                self.process_batch(polled)
                batches += 1
        finally:
            self._consumer.close(autocommit=False)

    def process_batch(self, polled: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """Handles one poll's records, publishes dead letters, flushes, then commits."""
        records = [record for partition in polled.values() for record in partition]
        deliveries: list[Delivery[M]] = []
        dead: list[Rejection] = []
        for record in records:
            try:
                deliveries.append(Delivery(record, self.topic.decode(record.value or b"")))  # type: ignore[arg-type]
            except DecodeError as exc:
                reason = f"payload is not a {self.topic.message_type.DESCRIPTOR.full_name}: {exc}"
                dead.append(Rejection(Delivery(record, None), reason, "DecodeError"))  # type: ignore[arg-type]
        if deliveries:
            dead.extend(self._handle(deliveries))
        for rejection in dead:
            self._dead_letter(rejection)
        # Results and dead letters must be durable before the offsets move on.
        self._publisher.flush()
        self._commit(polled)
        handled = len(records) - len(dead)
        self.processed += handled
        self.dead_lettered += len(dead)
        metrics.MESSAGES.labels(self.topic.name, self.group_id, "processed").inc(handled)
        if dead:
            metrics.MESSAGES.labels(self.topic.name, self.group_id, "dead_lettered").inc(len(dead))

    def _handle(self, deliveries: list[Delivery[M]]) -> list[Rejection]:
        try:
            return list(self._handler(deliveries))
        except Exception:
            if len(deliveries) == 1:
                raise
            log.exception(
                "batch failed, retrying its messages one by one", extra={"topic": self.topic.name}
            )
            metrics.BATCH_FAILURES.labels(self.topic.name, self.group_id).inc()
        rejected: list[Rejection] = []
        for delivery in deliveries:
            try:
                rejected.extend(self._handler([delivery]))
            except Exception as exc:
                rejected.append(
                    Rejection(delivery, f"processing failed: {exc}", type(exc).__name__)
                )
        return rejected

    def _dead_letter(self, rejection: Rejection) -> None:
        record = rejection.delivery.record
        log.warning(
            "dead-lettering message",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": rejection.reason,
            },
        )
        letter = topics_pb2.DeadLetter(
            meta=event_meta(self.group_id),
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            source_key=record.key or b"",
            payload=record.value or b"",
            reason=rejection.reason,
            error_type=rejection.error_type,
            consumer_group=self.group_id,
        )
        key = f"{record.topic}/{record.partition}/{record.offset}"
        self._publisher.publish(DLQ, key, letter)

    def _commit(self, polled: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        # A poll returns each partition's records in offset order: the last one is the newest.
        offsets = {
            tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
            for tp, records in polled.items()
            if records
        }
        lag = 0
        for tp, offset in offsets.items():
            highwater = self._consumer.highwater(tp)
            lag += max((highwater or 0) - offset.offset, 0)
        metrics.CONSUMER_LAG.labels(self.topic.name, self.group_id).set(lag)
        try:
            self._consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced mid-batch; the partition's new owner reprocesses
            # these messages, which the idempotent outputs make harmless.
            log.warning("commit failed after a rebalance", extra={"topic": self.topic.name})
