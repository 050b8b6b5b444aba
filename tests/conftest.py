"""Fixtures shared by the whole suite: real brokers and free loopback ports."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from google.protobuf.message import DecodeError

from contracts.topics import Topic
from services.core.broker import BROKER_KINDS, EmbeddedBroker, create_topics, free_port
from services.core.settings import Settings, get_settings

# Settings are read lazily, so these apply to every test. Tests must never reach a
# model hub, and the first group join of the embedded brokers takes about half the
# session timeout: keep it short.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RELKD_KAFKA_SESSION_TIMEOUT_MS", "6000")
os.environ.setdefault("RELKD_KAFKA_MAX_POLL_INTERVAL_MS", "10000")
os.environ.pop("RELKD_KAFKA_BOOTSTRAP", None)

# Tiny models, datasets and student checkpoints, the Triton venv and the Kubernetes API
# emulator, for every test directory.
pytest_plugins = ["model_fixtures", "student_fixtures", "kube_emulator"]


@pytest.fixture(scope="session", params=BROKER_KINDS)
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (Tansu and noida-db in turn) with the platform's topics."""
    with EmbeddedBroker(request.param) as broker:
        create_topics(broker.bootstrap)
        yield broker


@pytest.fixture
def settings(kafka_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("RELKD_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def read_topic(kafka_broker: EmbeddedBroker) -> Callable[..., list]:
    """Reads every message of a topic as a fresh consumer group, waiting for `expect` of them."""
    from kafka import KafkaConsumer

    def read(topic: Topic, expect: int, timeout_s: float = 30.0) -> list:
        def decoded(polled: dict) -> list:
            # Tests share topics, and the bus tests leave deliberate poison on them.
            out = []
            for records in polled.values():
                for record in records:
                    with contextlib.suppress(DecodeError):
                        out.append(topic.decode(record.value))
            return out

        consumer = KafkaConsumer(
            topic.name,
            bootstrap_servers=kafka_broker.bootstrap,
            group_id=f"reader-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        messages: list = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(messages) < expect and time.monotonic() < deadline:
                messages.extend(decoded(consumer.poll(timeout_ms=500)))
            # Drain briefly so duplicates beyond `expect` are seen too.
            messages.extend(decoded(consumer.poll(timeout_ms=1000)))
        finally:
            consumer.close()
        return messages

    return read
