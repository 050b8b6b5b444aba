"""The Kafka bus every service uses: a publisher, an at-least-once consumer loop, and
the one way a service runs that loop in the background.

Guarantees, and how they are kept (docs/reliability.md names the test of each):

* **Nothing published is lost**: the producer is idempotent with ``acks=all``;
  :meth:`Publisher.flush` waits (at most ``kafka_delivery_timeout_ms``) for every
  send and checks each one's outcome, raising :class:`DeliveryFailed` if any failed.
* **Nothing consumed is lost** (at-least-once): offsets are committed manually, only
  after a batch's results *and* its dead letters were published and acknowledged. A
  consumer killed mid-batch leaves its offsets where they were, so its replacement
  processes that batch again; outputs are keyed so reprocessing is idempotent.
* **Transient failures are retried, never dead-lettered**: a batch that fails on a
  broker, Triton, a timeout or an out-of-memory error (:func:`is_transient`) is
  retried, with exponential backoff, while every assigned partition is paused and
  nothing is committed. Meanwhile the loop reports itself unhealthy.
* **Only messages wrong in themselves go to** ``relevance.dlq.v1``: undecodable, empty,
  oversized, rejected by the handler, or failing on their own when the batch is
  retried message by message. An oversized message (or one whose dead letter would
  not fit) is dead-lettered as a reference: origin, size and reason, no payload.
* **Every blocking call is bounded** (``kafka_request_timeout_ms``,
  ``kafka_delivery_timeout_ms``): a paused broker fails the batch, it does not wedge
  the loop.
* **A dead loop is never silent**: :class:`BackgroundConsumer` runs a loop on a thread
  and reports its death, so the service goes NOT_SERVING and exits non-zero.
* **Graceful shutdown**: :meth:`ConsumerLoop.stop` lets the batch in flight finish
  and commit, then leaves the group.
* **A broker that lost its state does not make the loop skip**: after a rebalance the
  loop reads every partition it kept from the group's committed offset (the broker's
  record of what is done), not from its own fetch position. A broker restarted
  without its data (noida-db killed while rewriting its snapshot, a memory-only
  broker) numbers new records from 0 again; a remembered position past them would
  silently skip every record below it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import DLQ, Topic
from services.core import metrics
from services.core.settings import Settings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# Room a DeadLetter needs besides the payload (envelope, reason, key) and Kafka's record
# overhead; a payload that would push the letter past the max message size is left out.
_DEAD_LETTER_OVERHEAD = 16 * 1024


def event_meta(producer: str) -> common_pb2.EventMeta:
    """A fresh envelope for a topic payload."""
    produced_at = Timestamp()
    produced_at.GetCurrentTime()
    return common_pb2.EventMeta(
        event_id=uuid.uuid4().hex, producer=producer, produced_at=produced_at
    )


class TransientError(Exception):
    """A failure of something the message depends on, not of the message: retry it later."""


class DeliveryFailed(TransientError):
    """Published messages were not acknowledged (broker down, slow or refusing)."""


# gRPC codes that say "try again": the server is down, slow or overloaded.
_TRANSIENT_GRPC_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})


def is_transient(exc: BaseException) -> bool:
    """True when `exc` says nothing about the message itself, so its batch is retried.

    Broker trouble (retriable Kafka errors, timeouts, refused connections), an
    unavailable or overloaded gRPC dependency such as Triton, and running out of
    memory (the teacher on a too-large batch) are transient; anything else, e.g. a
    ``ValueError`` from parsing the message, is the message's fault.
    """
    if isinstance(exc, TransientError | TimeoutError | ConnectionError | MemoryError):
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaTimeoutError)
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError (also tritonclient's errors carry a status)
        try:
            name = getattr(code(), "name", "")
        except Exception:  # a code() that needs arguments is not gRPC's
            name = ""
        if name in _TRANSIENT_GRPC_CODES:
            return True
    # torch.OutOfMemoryError (a RuntimeError) without importing torch; CPU allocators
    # report the same condition as a plain RuntimeError.
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError)
        and ("out of memory" in text or "can't allocate memory" in text)
    )


class Publisher:
    """Publishes protobuf messages to topics with an idempotent, ``acks=all`` producer."""

    def __init__(self, settings: Settings, bootstrap: str | None = None, **producer_config: object):
        self.delivery_timeout_s = settings.kafka_delivery_timeout_ms / 1000
        self.max_message_bytes = settings.kafka_max_message_bytes
        config: dict[str, object] = {
            "bootstrap_servers": bootstrap or settings.kafka_bootstrap,
            "client_id": f"{settings.kafka_client_id}-producer",
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": settings.kafka_linger_ms,
            **settings.kafka_security(),
            # Retries are bounded by time, not count: a send has an outcome by then.
            "request_timeout_ms": settings.kafka_request_timeout_ms,
            "delivery_timeout_ms": settings.kafka_delivery_timeout_ms,
            # A send waits this long for topic metadata when the broker is away.
            "max_block_ms": settings.kafka_request_timeout_ms,
            "bootstrap_timeout_ms": settings.kafka_request_timeout_ms,
            "max_request_size": settings.kafka_max_message_bytes,
        }
        config.update(producer_config)
        self._config = config
        self._producer = KafkaProducer(**config)
        self._stale = False
        self._pending: list[tuple[str, FutureRecordMetadata]] = []

    def publish(self, topic: Topic, key: str, message: Message) -> None:
        """Queues one message; :meth:`flush` tells whether it was delivered."""
        if not isinstance(message, topic.message_type):
            raise TypeError(
                f"{topic.name} carries {topic.message_type.DESCRIPTOR.full_name}, "
                f"not {message.DESCRIPTOR.full_name}"
            )
        self.publish_raw(topic.name, key.encode(), message.SerializeToString())

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queues bytes as they are (re-driving a dead letter to its origin topic)."""
        if self._stale:
            self._renew()
            if self._stale:
                raise DeliveryFailed("no producer: the brokers cannot be reached")
        future = self._producer.send(topic, key=key, value=value)
        self._pending.append((topic, future))

    def flush(self, timeout_s: float | None = None) -> None:
        """Waits until every queued message is acknowledged; raises DeliveryFailed otherwise.

        Bounded by ``timeout_s`` (default: the delivery timeout, by which every send has
        an outcome). Messages of a failed flush may still arrive later: callers retry
        them, so a topic may hold duplicates but never misses one.
        """
        pending, self._pending = self._pending, []
        # A consumer loop flushes after every batch; most batches of a pure sink publish
        # nothing, and waking the sender thread for nothing costs ~10% of its throughput.
        if not pending:
            return
        timeout = self.delivery_timeout_s if timeout_s is None else timeout_s
        try:
            self._producer.flush(timeout=timeout)
        except KafkaTimeoutError as exc:
            waiting = sum(not future.is_done for _, future in pending)
            self._renew()
            raise DeliveryFailed(
                f"{waiting} of {len(pending)} sends not acknowledged within {timeout:g} s"
            ) from exc
        failed = [(topic, future.exception) for topic, future in pending if future.failed()]
        for topic in {topic for topic, _ in pending}:
            delivered = sum(t == topic and f.succeeded() for t, f in pending)
            metrics.PUBLISHED.labels(topic).inc(delivered)
        if failed:
            topic, first = failed[0]
            self._renew()
            raise DeliveryFailed(
                f"{len(failed)} of {len(pending)} sends failed (first, to {topic}: {first!r})"
            ) from first

    def _renew(self) -> None:
        """A fresh producer after failed sends: an idempotent producer whose batches
        expired keeps failing every later send (its sequence numbers are out of step)."""
        self._stale = True
        try:
            fresh = KafkaProducer(**self._config)
        except KafkaError as exc:  # brokers still away: the next publish tries again
            log.warning("cannot renew the producer yet", extra={"error": repr(exc)})
            return
        old, self._producer, self._stale = self._producer, fresh, False
        old.close(timeout=0, null_logger=True)

    def close(self) -> None:
        """Delivers what is queued (bounded by the delivery timeout), then closes."""
        try:
            self._producer.flush(timeout=self.delivery_timeout_s)
        except KafkaTimeoutError:
            log.warning("closing the producer with unacknowledged sends")
        self._producer.close(timeout=self.delivery_timeout_s)


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
# it rejects as invalid. A transient exception (is_transient) means "retry this batch
# later"; any other exception means "something in this batch is poison": the loop then
# retries the messages one at a time to isolate it. Side effects must therefore be
# idempotent (e.g. upserts), as a batch may be applied again.
BatchHandler = Callable[[Sequence[Delivery[M]]], Sequence[Rejection]]


class _KeptPartitions(ConsumerRebalanceListener):
    """Notes the partitions a rebalance gave back to this member.

    kafka-python keeps its fetch position for a partition assigned both before and after
    a rebalance. That position is only as good as the broker's memory: a broker that
    restarted without its data has numbered new records from 0 again (and forgotten the
    group, which is what made the member rejoin). The loop therefore re-reads the
    committed offset of every kept partition before processing it again. Callbacks run
    on kafka-python's event loop, so this only records; the loop thread does the I/O.
    """

    def __init__(self) -> None:
        self.kept: set[TopicPartition] = set()
        self._owned: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._owned |= set(revoked)

    def on_partitions_lost(self, lost: Sequence[TopicPartition]) -> None:
        self._owned |= set(lost)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.kept |= self._owned & set(assigned)
        self._owned = set()


def _record_size(record: ConsumerRecord) -> int:
    size = record.serialized_value_size
    return size if size is not None and size >= 0 else len(record.value or b"")


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
        self._request_timeout_ms = settings.kafka_request_timeout_ms
        self._max_message_bytes = settings.kafka_max_message_bytes
        self._backoff_s = settings.bus_retry_backoff_s
        self._backoff_max_s = settings.bus_retry_backoff_max_s
        self._stop = threading.Event()
        self._lag_warned: set[TopicPartition] = set()
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
            "request_timeout_ms": max(
                settings.kafka_request_timeout_ms, settings.kafka_session_timeout_ms + 1000
            ),
        }
        if settings.kafka_group_instance_id:
            config["group_instance_id"] = settings.kafka_group_instance_id
        config.update(consumer_config)
        self._consumer = KafkaConsumer(**config)
        self._rebalances = _KeptPartitions()
        self._consumer.subscribe([topic.name], listener=self._rebalances)
        self.rewinds = 0
        self.processed = 0
        self.dead_lettered = 0
        self.retries = 0
        # Called with False while a batch keeps failing transiently, True once one commits.
        self.on_health: Callable[[bool], None] = lambda healthy: None
        self.healthy = True

    def stop(self) -> None:
        """Asks the loop to finish its current batch, commit it and leave the group."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, max_batches: int | None = None) -> None:
        """Polls and processes batches until :meth:`stop` (or `max_batches` non-empty batches).

        Raises what a batch raised that is not transient and could not be isolated
        (a bug of the loop or the handler): the caller decides to die loudly.
        """
        batches = 0
        try:
            while not self._stop.is_set() and (max_batches is None or batches < max_batches):
                polled = self._consumer.poll(timeout_ms=self._poll_timeout_ms)
                if self._rebalances.kept:
                    polled = self._start_kept_partitions_from_commits(polled)
                if not any(polled.values()):
                    continue
                self._process_until_done(polled)
                batches += 1
        finally:
            self._consumer.close(autocommit=False, timeout_ms=self._request_timeout_ms)

    def _start_kept_partitions_from_commits(
        self, polled: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> dict[TopicPartition, Sequence[ConsumerRecord]]:
        """Moves each partition a rebalance kept to the group's committed offset (the
        reset policy's end when the group has none) unless the poll already starts there;
        returns the poll without the records of partitions it moved."""
        kept = self._rebalances.kept & self._consumer.assignment()
        timeout_ms = self._request_timeout_ms
        try:
            committed = {tp: self._consumer.committed(tp, timeout_ms=timeout_ms) for tp in kept}
            starts = {
                tp: polled[tp][0].offset
                if polled.get(tp)
                else self._consumer.position(tp, timeout_ms=timeout_ms)
                for tp in kept
            }
        except KafkaError as exc:
            # Cannot tell yet: hand the records back to the broker and ask again next poll.
            log.warning("cannot read committed offsets", extra={"error": repr(exc)})
            for tp in kept:
                if polled.get(tp):
                    self._consumer.seek(tp, polled[tp][0].offset)
            return {tp: records for tp, records in polled.items() if tp not in kept}
        self._rebalances.kept.clear()
        moved = {tp for tp in kept if committed[tp] is None or committed[tp] != starts[tp]}
        for tp in moved:
            if committed[tp] is not None:
                self._consumer.seek(tp, committed[tp])
            elif self._consumer.config["auto_offset_reset"] == "latest":
                self._consumer.seek_to_end(tp)
            else:
                self._consumer.seek_to_beginning(tp)
        if moved:
            self.rewinds += 1
            log.warning(
                "partitions kept across a rebalance restart from the group's commits",
                extra={
                    "topic": self.topic.name,
                    "from": {str(tp.partition): starts[tp] for tp in moved},
                    "committed": {str(tp.partition): committed[tp] for tp in moved},
                },
            )
        return {tp: records for tp, records in polled.items() if tp not in moved}

    def _set_health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            self.on_health(healthy)

    def _process_until_done(
        self, polled: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> None:
        """Processes a batch, retrying it with backoff while it fails transiently."""
        attempt = 0
        while True:
            try:
                self.process_batch(polled)
                self._set_health(True)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                self.retries += 1
                delay = min(self._backoff_s * 2 ** (attempt - 1), self._backoff_max_s)
                log.warning(
                    "batch failed transiently; retrying it (nothing committed)",
                    extra={
                        "topic": self.topic.name,
                        "attempt": attempt,
                        "retry_in_s": delay,
                        "error": repr(exc),
                    },
                )
                metrics.BATCH_RETRIES.labels(self.topic.name, self.group_id).inc()
                self._set_health(False)
                if not self._paused_wait(delay):
                    # Stopping: leave the batch uncommitted for the partition's next owner.
                    return
                if self._rebalances.kept:
                    # The group rebalanced during the wait (a broker restart makes it):
                    # the batch stays uncommitted and run() restarts the kept partitions
                    # from the group's commits, which a restarted broker may have lost.
                    return
                owned = self._consumer.assignment()
                polled = {tp: records for tp, records in polled.items() if tp in owned}
                if not any(polled.values()):
                    return  # a rebalance gave the batch's partitions to another member

    def _paused_wait(self, delay_s: float) -> bool:
        """Waits `delay_s` with every partition paused, still polling so the group keeps
        us; returns False if the loop was asked to stop meanwhile."""
        deadline = time.monotonic() + delay_s
        try:
            while not self._stop.is_set():
                self._consumer.pause(*self._consumer.assignment())
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                polled = self._consumer.poll(timeout_ms=int(min(left, 0.2) * 1000) or 1)
                # Partitions assigned during the wait were not paused: rewind what they gave.
                for tp, records in polled.items():
                    if records:
                        self._consumer.seek(tp, records[0].offset)
            return False
        finally:
            self._consumer.resume(*self._consumer.paused())

    def process_batch(self, polled: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """Handles one poll's records, publishes dead letters, flushes, then commits.

        Raises (committing nothing) if a result or dead letter was not delivered.
        """
        records = [record for partition in polled.values() for record in partition]
        deliveries: list[Delivery[M]] = []
        dead: list[Rejection] = []
        for record in records:
            problem, error_type = self._record_problem(record)
            if problem:
                dead.append(Rejection(Delivery(record, None), problem, error_type))  # type: ignore[arg-type]
                continue
            try:
                deliveries.append(Delivery(record, self.topic.decode(record.value)))  # type: ignore[arg-type]
            except DecodeError as exc:
                reason = f"payload is not a {self.topic.message_type.DESCRIPTOR.full_name}: {exc}"
                dead.append(Rejection(Delivery(record, None), reason, "DecodeError"))  # type: ignore[arg-type]
        if deliveries:
            dead.extend(self._handle(deliveries))
        for rejection in dead:
            self._dead_letter(rejection)
        # Results and dead letters must be acknowledged before the offsets move on.
        self._publisher.flush()
        self._commit(polled)
        handled = len(records) - len(dead)
        self.processed += handled
        self.dead_lettered += len(dead)
        metrics.MESSAGES.labels(self.topic.name, self.group_id, "processed").inc(handled)
        if dead:
            metrics.MESSAGES.labels(self.topic.name, self.group_id, "dead_lettered").inc(len(dead))

    def _record_problem(self, record: ConsumerRecord) -> tuple[str, str]:
        """Why a record cannot be handled at all, before decoding it ("" if it can)."""
        if not record.value:
            return "empty payload (no message to process)", "EmptyPayload"
        size = _record_size(record)
        if size > self._max_message_bytes:
            return (
                f"message of {size} bytes exceeds kafka_max_message_bytes "
                f"({self._max_message_bytes})",
                "MessageTooLarge",
            )
        return "", ""

    def _handle(self, deliveries: list[Delivery[M]]) -> list[Rejection]:
        try:
            return list(self._handler(deliveries))
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(deliveries) == 1:
                return [Rejection(deliveries[0], f"processing failed: {exc}", type(exc).__name__)]
            log.exception(
                "batch failed, retrying its messages one by one", extra={"topic": self.topic.name}
            )
            metrics.BATCH_FAILURES.labels(self.topic.name, self.group_id).inc()
        rejected: list[Rejection] = []
        for delivery in deliveries:
            try:
                rejected.extend(self._handler([delivery]))
            except Exception as exc:
                if is_transient(exc):
                    raise
                rejected.append(
                    Rejection(delivery, f"processing failed: {exc}", type(exc).__name__)
                )
        return rejected

    def _dead_letter(self, rejection: Rejection) -> None:
        record = rejection.delivery.record
        size = _record_size(record)
        payload = record.value or b""
        key = record.key or b""
        reason = rejection.reason
        if size + len(key) + _DEAD_LETTER_OVERHEAD > self._max_message_bytes:
            # The letter could not be published with its payload: a reference instead.
            payload, key = b"", key[:1024]
            reason += (
                f" (payload of {size} bytes not copied: read it at "
                f"{record.topic}/{record.partition}/{record.offset})"
            )
        log.warning(
            "dead-lettering message",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "size": size,
                "reason": reason[:500],
            },
        )
        letter = topics_pb2.DeadLetter(
            meta=event_meta(self.group_id),
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            source_key=key,
            payload=payload,
            reason=reason[:4000],
            error_type=rejection.error_type,
            consumer_group=self.group_id,
            payload_size=size,
        )
        self._publisher.publish(DLQ, f"{record.topic}/{record.partition}/{record.offset}", letter)

    def _commit(self, polled: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        # A poll returns each partition's records in offset order: the last one is the newest.
        offsets = {
            tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
            for tp, records in polled.items()
            if records
        }
        try:
            self._consumer.commit(offsets, timeout_ms=self._request_timeout_ms)
        except CommitFailedError:
            # The group rebalanced mid-batch; the partition's new owner reprocesses
            # these messages, which the idempotent outputs make harmless.
            log.warning("commit failed after a rebalance", extra={"topic": self.topic.name})
        self._report_lag(offsets)

    def _report_lag(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Sets the lag gauge from the brokers' high watermarks, unless they are wrong.

        Some brokers (Tansu) report end offsets below records they serve; an end offset
        behind what was just consumed proves it, and the lag is then unknown (NaN), not 0.
        """
        lag = 0.0
        for tp, offset in offsets.items():
            highwater = self._consumer.highwater(tp)
            if highwater is None or highwater < offset.offset:
                if tp not in self._lag_warned:
                    self._lag_warned.add(tp)
                    log.warning(
                        "broker end offset is behind consumed records; lag unknown",
                        extra={"partition": str(tp), "end": highwater, "next": offset.offset},
                    )
                lag = math.nan
                continue
            lag += highwater - offset.offset
        metrics.CONSUMER_LAG.labels(self.topic.name, self.group_id).set(lag)


class BackgroundConsumer:
    """Runs one :class:`ConsumerLoop` on a thread for a service: the one way services do.

    ``on_health(bool)`` follows the loop's health (False while its batch keeps failing
    transiently); ``on_death(exc)`` is called if the loop dies of anything but a stop
    request: the service must then go NOT_SERVING and exit non-zero, so its supervisor
    restarts it (the uncommitted batch is redelivered to the next process).
    """

    def __init__(self, loop: ConsumerLoop, publisher: Publisher, name: str) -> None:
        self.loop = loop
        self.publisher = publisher
        self.name = name
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(
        self,
        on_health: Callable[[bool], None] = lambda healthy: None,
        on_death: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.loop.on_health = on_health

        def run() -> None:
            try:
                self.loop.run()
            except BaseException as exc:
                self.error = exc
                log.exception("consumer thread died", extra={"consumer": self.name})
                on_death(exc)
                return
            if not self.loop.stopping:
                self.error = RuntimeError(f"consumer {self.name} returned without a stop request")
                on_death(self.error)

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stops the loop after its batch in flight, then closes the publisher."""
        self.loop.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.publisher.close()
