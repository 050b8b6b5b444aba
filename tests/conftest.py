"""Fixtures shared by the whole suite: real brokers and free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Tests must never reach a model hub, and the first group join of the embedded
# brokers takes about half the session timeout: keep it short.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RELKD_KAFKA_SESSION_TIMEOUT_MS", "6000")
os.environ.setdefault("RELKD_KAFKA_MAX_POLL_INTERVAL_MS", "10000")
os.environ.pop("RELKD_KAFKA_BOOTSTRAP", None)

from services.core.broker import BROKER_KINDS, EmbeddedBroker, create_topics, free_port
from services.core.settings import Settings, get_settings


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
