"""Fault injection on the real embedded brokers and services: each test breaks something
(pauses or kills a broker, kills a consumer or the supervisor, feeds poison) and ends
with a count of inputs against outputs. Timeouts are shortened through the settings so
the whole suite stays within a few minutes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.core.broker import EmbeddedBroker, create_topics


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def tansu() -> Iterator[EmbeddedBroker]:
    """A broker of the test's own: faults pause and kill it."""
    with EmbeddedBroker("tansu") as broker:
        create_topics(broker.bootstrap)
        yield broker
