"""Helpers of the fault-injection suite: short-timeout settings, pausing a process,
reading a topic whole, a group's committed offsets."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from google.protobuf.message import DecodeError
from kafka import KafkaConsumer, TopicPartition
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import CANDIDATES, LABELS, Topic
from services.core import bus
from services.core.settings import Settings


def fault_settings(bootstrap: str, **overrides: object) -> Settings:
    """Settings with every timeout short enough for a fault to show within seconds."""
    values: dict[str, object] = {
        "kafka_bootstrap": bootstrap,
        "kafka_request_timeout_ms": 1000,
        "kafka_delivery_timeout_ms": 1500,
        "kafka_session_timeout_ms": 6000,
        "kafka_max_poll_interval_ms": 10000,
        "bus_retry_backoff_s": 0.2,
        "bus_retry_backoff_max_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP a process for the duration of the block (SIGCONT even if the block fails)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def candidate(query_id: str) -> topics_pb2.CandidateBatch:
    return topics_pb2.CandidateBatch(
        query_id=query_id,
        query="grey sofa",
        products=[common_pb2.Product(product_id="p1", title="Grey sofa")],
    )


def publish_candidates(settings: Settings, ids: list[str], key: str = "one-partition") -> None:
    publisher = bus.Publisher(settings)
    try:
        for qid in ids:
            publisher.publish(CANDIDATES, key, candidate(qid))
        publisher.flush()
    finally:
        publisher.close()


def read_all(bootstrap: str, topic: Topic, idle_ms: int = 1500) -> list:
    """Every decodable message of `topic`, from the start, until `idle_ms` of quiet."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=11000
    )
    try:
        partitions = [
            TopicPartition(topic.name, p) for p in consumer.partitions_for_topic(topic.name) or ()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        out = []
        while True:
            polled = consumer.poll(timeout_ms=idle_ms)
            if not any(polled.values()):
                return out
            for records in polled.values():
                for record in records:
                    with contextlib.suppress(DecodeError):
                        out.append(topic.decode(record.value or b""))
    finally:
        consumer.close(autocommit=False)


def committed(bootstrap: str, group: str, topic: Topic = CANDIDATES) -> int:
    """Offsets the group has committed on `topic`, summed over partitions (inputs done)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        request_timeout_ms=11000,
    )
    try:
        partitions = consumer.partitions_for_topic(topic.name) or ()
        offsets = (consumer.committed(TopicPartition(topic.name, p)) for p in partitions)
        return sum(offset or 0 for offset in offsets)
    finally:
        consumer.close(autocommit=False)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class EchoLabeler:
    """A consumer handler that writes one LabelRecord per candidate batch, keyed by it."""

    def __init__(self, publisher: bus.Publisher) -> None:
        self.publisher = publisher
        self.calls = 0

    def __call__(self, deliveries):
        self.calls += 1
        for d in deliveries:
            qid = d.message.query_id
            self.publisher.publish(LABELS, qid, topics_pb2.LabelRecord(query_id=qid))
        return []


class GatedEchoLabeler(EchoLabeler):
    """An EchoLabeler that holds each batch until ``go_on`` is set, so a test can
    inject its fault while a batch is in flight (``in_batch`` says one is)."""

    def __init__(self, publisher: bus.Publisher) -> None:
        super().__init__(publisher)
        self.in_batch, self.go_on = threading.Event(), threading.Event()

    def __call__(self, deliveries):
        self.in_batch.set()
        self.go_on.wait(30)
        return super().__call__(deliveries)


def run_loop(loop: bus.ConsumerLoop) -> threading.Thread:
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    return thread


def run_id() -> str:
    return uuid.uuid4().hex[:8]
