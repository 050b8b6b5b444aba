"""The Kafka bus against real brokers (Tansu and noida-db): publishing, consumer
groups, dead-lettering, at-least-once across a killed consumer, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import CANDIDATES, DLQ, LABELS
from services.core import bus
from services.core.broker import EmbeddedBroker
from services.core.settings import Settings

pytestmark = pytest.mark.integration


def candidate(query_id: str) -> topics_pb2.CandidateBatch:
    return topics_pb2.CandidateBatch(
        query_id=query_id,
        query="grey sofa",
        products=[common_pb2.Product(product_id="p1", title="Grey sofa")],
    )


def run_loop_in_thread(loop: bus.ConsumerLoop) -> threading.Thread:
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    return thread


def test_publisher_refuses_the_wrong_message_type(settings: Settings) -> None:
    publisher = bus.Publisher(settings)
    try:
        with pytest.raises(
            TypeError, match=r"relevance\.candidates\.v1 carries relevance\.v1\.CandidateBatch"
        ):
            publisher.publish(CANDIDATES, "k", topics_pb2.LabelRecord())
    finally:
        publisher.close()


def test_poison_and_invalid_messages_are_dead_lettered_with_reason(
    settings: Settings, read_topic
) -> None:
    run = uuid.uuid4().hex[:8]
    publisher = bus.Publisher(settings)
    # A payload that is not a CandidateBatch, one the handler rejects, one on which
    # it crashes, and two good ones.
    publisher._producer.send(CANDIDATES.name, key=b"bad", value=b"\xff\xff\xff not protobuf")
    for qid in (f"{run}-ok1", f"{run}-invalid", f"{run}-crash", f"{run}-ok2"):
        publisher.publish(CANDIDATES, qid, candidate(qid))
    publisher.flush()

    handled: list[str] = []

    def handler(deliveries):
        if any(d.message.query_id.endswith("crash") for d in deliveries):
            raise ValueError("price is not a number")
        rejections = []
        for d in deliveries:
            if d.message.query_id.endswith("invalid"):
                rejections.append(bus.Rejection(d, "query: must not be empty"))
            else:
                handled.append(d.message.query_id)
        return rejections

    loop = bus.ConsumerLoop(settings, CANDIDATES, f"dlq-{run}", handler, publisher)
    thread = run_loop_in_thread(loop)
    deadline = time.monotonic() + 30
    while loop.processed + loop.dead_lettered < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    loop.stop()
    thread.join(15)
    publisher.close()

    assert sorted(q for q in handled if q.startswith(run)) == [f"{run}-ok1", f"{run}-ok2"]
    letters = [m for m in read_topic(DLQ, expect=3) if m.consumer_group == f"dlq-{run}"]
    by_reason = {m.error_type: m for m in letters}
    assert set(by_reason) == {"DecodeError", "ValidationError", "ValueError"}
    assert by_reason["DecodeError"].payload == b"\xff\xff\xff not protobuf"
    assert "is not a relevance.v1.CandidateBatch" in by_reason["DecodeError"].reason
    assert by_reason["ValidationError"].reason == "query: must not be empty"
    assert "price is not a number" in by_reason["ValueError"].reason
    crashed = topics_pb2.CandidateBatch.FromString(by_reason["ValueError"].payload)
    assert crashed.query_id == f"{run}-crash"
    assert all(m.source_topic == CANDIDATES.name and m.source_offset >= 0 for m in letters)
    assert by_reason["ValueError"].payload_size == len(by_reason["ValueError"].payload)


def test_transient_failures_are_retried_whole_never_dead_lettered(
    settings: Settings, read_topic
) -> None:
    """Triton down, the teacher out of memory: the batch waits and is retried, uncommitted."""
    run = uuid.uuid4().hex[:8]
    fast = settings.model_copy(update={"bus_retry_backoff_s": 0.05})
    publisher = bus.Publisher(fast)
    ids = [f"{run}-{i}" for i in range(6)]
    for qid in ids:
        publisher.publish(CANDIDATES, "one-partition", candidate(qid))
    publisher.flush()

    failures = [TimeoutError("triton did not answer"), RuntimeError("CUDA out of memory")]
    handled: list[str] = []
    health: list[bool] = []

    def flaky(deliveries):
        if failures:
            raise failures.pop(0)
        handled.extend(d.message.query_id for d in deliveries if d.message.query_id.startswith(run))
        return []

    loop = bus.ConsumerLoop(fast, CANDIDATES, f"transient-{run}", flaky, publisher)
    loop.on_health = health.append
    thread = run_loop_in_thread(loop)
    deadline = time.monotonic() + 30
    while len(handled) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    loop.stop()
    thread.join(15)
    publisher.close()
    assert handled == ids  # each once, in order: nothing skipped, nothing repeated
    assert loop.retries == 2
    assert health == [False, True]  # unhealthy while retrying, healthy once committed
    # The topic holds other tests' poison: only a letter about our messages would be wrong.
    ours = [m for m in read_topic(DLQ, expect=0, timeout_s=1) if m.consumer_group.endswith(run)]
    assert not [m for m in ours if m.error_type not in ("DecodeError", "EmptyPayload")]


def test_empty_and_oversized_messages_are_dead_lettered_by_reference(
    settings: Settings, read_topic
) -> None:
    run = uuid.uuid4().hex[:8]
    small = settings.model_copy(update={"kafka_max_message_bytes": 64 * 1024})
    publisher = bus.Publisher(settings)  # the default limit lets the big one through
    big = candidate(f"{run}-big")
    big.query = "x" * 200_000
    publisher.publish(CANDIDATES, "k", big)
    publisher.publish_raw(CANDIDATES.name, b"k", b"")
    publisher.publish(CANDIDATES, "k", candidate(f"{run}-ok"))
    publisher.flush()

    handled: list[str] = []

    def handler(deliveries):
        handled.extend(d.message.query_id for d in deliveries)
        return []

    group = f"size-{run}"
    loop = bus.ConsumerLoop(small, CANDIDATES, group, handler, bus.Publisher(small))
    thread = run_loop_in_thread(loop)
    deadline = time.monotonic() + 30
    while f"{run}-ok" not in handled and time.monotonic() < deadline:
        time.sleep(0.1)
    loop.stop()
    thread.join(15)
    publisher.close()
    assert f"{run}-big" not in handled and f"{run}-ok" in handled
    letters = {
        m.error_type: m
        for m in read_topic(DLQ, expect=2)
        # The topic also holds the earlier tests' undecodable poison.
        if m.consumer_group == group and m.error_type != "DecodeError"
    }
    assert set(letters) == {"MessageTooLarge", "EmptyPayload"}
    oversized = letters["MessageTooLarge"]
    assert oversized.payload == b"" and oversized.payload_size > 200_000
    assert f"{CANDIDATES.name}/{oversized.source_partition}/{oversized.source_offset}" in (
        oversized.reason
    )


def test_killed_consumer_loses_nothing_and_replacement_resumes(
    settings: Settings, kafka_broker: EmbeddedBroker, read_topic
) -> None:
    run = uuid.uuid4().hex[:8]
    group = f"alo-{run}"
    ids = [f"{run}-{i:03d}" for i in range(40)]
    publisher = bus.Publisher(settings)
    # The worker hangs mid-stream, after several committed batches of 5.
    for qid in [*ids[:20], f"hang-{run}", *ids[20:]]:
        publisher.publish(CANDIDATES, "one-partition", candidate(qid))
    publisher.flush()

    # Static membership, as a restarted pod of a StatefulSet has: the replacement
    # takes the dead worker's place at once (noida-db never expires a dead member).
    instance = f"worker-{run}"
    env = {
        **os.environ,
        "RELKD_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "RELKD_KAFKA_GROUP_INSTANCE_ID": instance,
    }
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("consumer_worker.py")), group],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert worker.stdout.readline().strip() == "HANGING"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    # The replacement processes everything the killed worker did not commit.
    echoed: list[str] = []

    def echo(deliveries):
        for d in deliveries:
            if not d.message.query_id.startswith("hang"):
                echoed.append(d.message.query_id)
                publisher.publish(
                    LABELS, d.message.query_id, topics_pb2.LabelRecord(query_id=d.message.query_id)
                )
        return []

    loop = bus.ConsumerLoop(
        settings, CANDIDATES, group, echo, publisher, max_poll_records=5, group_instance_id=instance
    )
    thread = run_loop_in_thread(loop)
    deadline = time.monotonic() + 60
    while ids[-1] not in echoed and time.monotonic() < deadline:
        time.sleep(0.1)
    loop.stop()
    thread.join(15)
    publisher.close()

    labels = {m.query_id for m in read_topic(LABELS, expect=len(ids)) if m.query_id.startswith(run)}
    assert labels == set(ids), f"lost: {sorted(set(ids) - labels)}"
    # The replacement resumed from the committed offsets instead of starting over:
    # it never saw the first batch the killed worker had committed.
    assert ids[0] not in echoed
    assert ids[20] in echoed


def test_graceful_stop_commits_the_batch_in_flight(settings: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    group = f"graceful-{run}"
    publisher = bus.Publisher(settings)
    for i in range(6):
        publisher.publish(CANDIDATES, "k", candidate(f"{run}-{i}"))
    publisher.flush()

    seen: list[str] = []
    started = threading.Event()

    def slow(deliveries):
        started.set()
        time.sleep(1.0)
        seen.extend(d.message.query_id for d in deliveries if d.message.query_id.startswith(run))
        return []

    loop = bus.ConsumerLoop(settings, CANDIDATES, group, slow, publisher)
    thread = run_loop_in_thread(loop)
    assert started.wait(30)
    loop.stop()  # while the batch is still being processed
    thread.join(15)
    assert not thread.is_alive()

    # A second member of the group finds nothing left of what the first finished.
    again: list[str] = []
    second = bus.ConsumerLoop(
        settings,
        CANDIDATES,
        group,
        lambda ds: again.extend(d.message.query_id for d in ds) or [],
        publisher,
    )
    thread = run_loop_in_thread(second)
    time.sleep(6)
    second.stop()
    thread.join(15)
    publisher.close()
    assert seen, "the in-flight batch was not finished"
    assert not set(seen) & set(again), "a finished batch was not committed on stop"
