"""The teacher-labeling service with a tiny Llama-family teacher: candidates published
to Kafka become labels on the labels topic, poison batches go to the dead-letter
topic, and the Label RPC gives the same label as the topic for the same pair."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from relevance.v1 import common_pb2, teacher_labeling_pb2, teacher_labeling_pb2_grpc, topics_pb2

from contracts.topics import CANDIDATES, DLQ, LABELS, pair_key
from ops.stack import health_status
from services.core import bus
from services.core.broker import BROKER_KINDS, EmbeddedBroker, create_topics, free_port
from services.core.settings import Settings
from training.teacher.labeler import TeacherLabeler

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=BROKER_KINDS)
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    """A broker of this module's own: a new labeling group reads the candidates topic from
    its start, and other tests leave batches (and poison) there."""
    with EmbeddedBroker(request.param) as broker:
        create_topics(broker.bootstrap)
        yield broker


@pytest.fixture
def labeling_service(
    llama_teacher: Path, kafka_broker: EmbeddedBroker, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    port, group = free_port(), f"labeling-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "RELKD_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "RELKD_TEACHER_CHECKPOINT": str(llama_teacher),
        "RELKD_TEACHER_LABELING_PORT": str(port),
        "RELKD_TEACHER_GROUP": group,
        # Labeling a batch on a busy CI machine can take longer than the suite's 10 s.
        "RELKD_KAFKA_MAX_POLL_INTERVAL_MS": "120000",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.serve", "teacher-labeling"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "service.log").open("wb"),
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while health_status(address, "relevance.v1.TeacherLabeling") != "SERVING":
        assert process.poll() is None, (tmp_path / "service.log").read_text()
        assert time.monotonic() < deadline, "teacher-labeling not SERVING in 90 s"
        time.sleep(0.2)
    yield address, group
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(30) == 0


def product(i: int) -> common_pb2.Product:
    return common_pb2.Product(
        product_id=f"p{i}", title=f"acme red sofa model {i}", product_type="sofa", brand="acme"
    )


def test_candidates_become_labels_and_poison_is_dead_lettered(
    labeling_service: tuple[str, str], settings: Settings, read_topic, llama_teacher: Path
) -> None:
    address, group = labeling_service
    run = uuid.uuid4().hex[:8]
    publisher = bus.Publisher(settings)
    batches = [
        topics_pb2.CandidateBatch(
            query_id=f"{run}-q{q}", query="red sofa", products=[product(i) for i in range(3)]
        )
        for q in range(3)
    ]
    for batch in batches:
        publisher.publish(CANDIDATES, batch.query_id, batch)
    poison = topics_pb2.CandidateBatch(query_id=f"{run}-poison", query=" ", products=[product(9)])
    publisher.publish(CANDIDATES, poison.query_id, poison)
    publisher.close()

    expected = {pair_key(b.query_id, p.product_id) for b in batches for p in b.products}
    labels = [m for m in read_topic(LABELS, expect=len(expected), timeout_s=90)
              if m.query_id.startswith(run)]  # fmt: skip
    version = TeacherLabeler.from_checkpoint(llama_teacher).version
    assert {m.pair_key for m in labels} == expected
    for label in labels:
        assert label.teacher.version == version
        assert len(label.grades.probs) == 4
        assert math.isclose(sum(label.grades.probs), 1.0, abs_tol=1e-3)
        assert label.expected_score == pytest.approx(
            sum(g * p for g, p in enumerate(label.grades.probs)), abs=1e-3
        )
    letters = [m for m in read_topic(DLQ, expect=1, timeout_s=30) if m.consumer_group == group]
    # At least once: a rebalance may dead-letter the poison batch twice, never another.
    assert letters and {m.reason for m in letters} == {"query: must not be empty"}
    assert {topics_pb2.CandidateBatch.FromString(m.payload).query_id for m in letters} == {
        poison.query_id
    }

    # The ad-hoc RPC and the topic agree on the same pair: labels are deterministic.
    first = next(m for m in labels if m.product_id == "p1")
    with grpc.insecure_channel(address) as channel:
        reply = teacher_labeling_pb2_grpc.TeacherLabelingStub(channel).Label(
            teacher_labeling_pb2.LabelRequest(
                pairs=[teacher_labeling_pb2.LabelPair(query="red sofa", product=product(1))]
            ),
            timeout=30,
        )
    assert reply.teacher.version == version
    assert list(reply.labels[0].grades.probs) == pytest.approx(list(first.grades.probs), abs=1e-6)
