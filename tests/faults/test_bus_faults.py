"""The bus under broker faults: nothing is committed before its outputs are acknowledged,
nothing wedges, and after every fault each input has its output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from fault_tools import (
    EchoLabeler,
    GatedEchoLabeler,
    committed,
    fault_settings,
    paused,
    publish_candidates,
    read_all,
    run_id,
    run_loop,
    wait_for,
)
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import CANDIDATES, DLQ, LABELS, RELABEL_REQUESTS, SERVED
from services.core import bus
from services.core.broker import EmbeddedBroker, create_topics


def _labels(bootstrap: str, run: str) -> list[str]:
    return [m.query_id for m in read_all(bootstrap, LABELS) if m.query_id.startswith(run)]


def test_output_unreachable_past_the_delivery_timeout_commits_nothing(
    tansu: EmbeddedBroker,
) -> None:
    """Issue 16 #1: 20 sends failed, flush() returned, 20 offsets were committed."""
    run, n = run_id(), 20
    ids = [f"{run}-{i:02d}" for i in range(n)]
    inputs = fault_settings(tansu.bootstrap)
    publish_candidates(inputs, ids)
    with EmbeddedBroker("tansu") as output:
        create_topics(output.bootstrap)
        publisher = bus.Publisher(fault_settings(output.bootstrap))
        group = f"unreachable-{run}"
        loop = bus.ConsumerLoop(inputs, CANDIDATES, group, EchoLabeler(publisher), publisher)
        health: list[bool] = []
        loop.on_health = health.append
        with paused(output.pid):
            thread = run_loop(loop)
            # Each attempt waits out the 1.5 s delivery timeout, then backs off.
            wait_for(lambda: loop.retries >= 2, 30, "two failed deliveries")
            assert committed(tansu.bootstrap, group) == 0
            assert health == [False]
        wait_for(lambda: committed(tansu.bootstrap, group) >= n, 60, "the batch to commit")
        loop.stop()
        thread.join(30)
        publisher.close()
        delivered = _labels(output.bootstrap, run)
        assert set(delivered) == set(ids)  # nothing lost; retries may have duplicated
        assert health[-1] is True
        assert not [m for m in read_all(output.bootstrap, DLQ) if m.consumer_group == group]


def test_a_paused_broker_does_not_wedge_the_loop(tansu: EmbeddedBroker) -> None:
    """Issue 16 #2: after an 8 s SIGSTOP the loop stayed blocked in flush() forever."""
    run, n = run_id(), 30
    ids = [f"{run}-{i:02d}" for i in range(n)]
    settings = fault_settings(tansu.bootstrap, kafka_max_poll_records=5)
    publish_candidates(settings, ids[:10])
    publisher = bus.Publisher(settings)
    # The broker is paused while the held batch is in flight: its flush meets the pause.
    gated = GatedEchoLabeler(publisher)
    group = f"paused-{run}"
    loop = bus.ConsumerLoop(settings, CANDIDATES, group, gated, publisher)
    thread = run_loop(loop)
    assert gated.in_batch.wait(30)
    with paused(tansu.pid):
        gated.go_on.set()
        wait_for(lambda: loop.retries >= 1 or not thread.is_alive(), 30, "a failed attempt")
    assert thread.is_alive()
    publish_candidates(settings, ids[10:])
    wait_for(lambda: committed(tansu.bootstrap, group) >= n, 60, "every input to commit")
    loop.stop()
    thread.join(30)
    publisher.close()
    assert not thread.is_alive()
    assert set(_labels(tansu.bootstrap, run)) == set(ids)


WORKER = """
import sys, time
from fault_tools import EchoLabeler, fault_settings
from contracts.topics import CANDIDATES
from services.core import bus

settings = fault_settings(sys.argv[1], kafka_max_poll_records=5)
publisher = bus.Publisher(settings)
echo = EchoLabeler(publisher)

def slow(deliveries):
    echo(deliveries)
    print("BATCH", flush=True)
    time.sleep(0.2)  # the kill lands between publishing a batch and committing it
    return []

bus.ConsumerLoop(settings, CANDIDATES, sys.argv[2], slow, publisher).run()
"""


def test_a_consumer_killed_mid_batch_loses_nothing(tansu: EmbeddedBroker) -> None:
    run, n = run_id(), 40
    ids = [f"{run}-{i:02d}" for i in range(n)]
    settings = fault_settings(tansu.bootstrap)
    publish_candidates(settings, ids)
    group = f"killed-{run}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path]),
        "RELKD_KAFKA_GROUP_INSTANCE_ID": f"worker-{run}",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, tansu.bootstrap, group],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for _ in range(3):
            assert worker.stdout.readline().strip() == "BATCH"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    done_before = committed(tansu.bootstrap, group)
    assert done_before < n

    publisher = bus.Publisher(settings)
    loop = bus.ConsumerLoop(
        settings,
        CANDIDATES,
        group,
        EchoLabeler(publisher),
        publisher,
        group_instance_id=f"worker-{run}",
    )
    thread = run_loop(loop)
    wait_for(lambda: committed(tansu.bootstrap, group) >= n, 60, "the replacement to finish")
    loop.stop()
    thread.join(30)
    publisher.close()
    labels = _labels(tansu.bootstrap, run)
    assert set(labels) == set(ids)  # duplicates allowed on the topic, none lost
    assert loop.processed == n - done_before  # resumed from the commit, not from scratch


def test_poison_on_every_consumed_topic_is_dead_lettered_and_counted(
    tansu: EmbeddedBroker,
) -> None:
    """Issue 16 #3: one oversized message killed a pipeline. Per topic: 3 good, one
    oversized, one undecodable, one empty; inputs = outputs + dead letters."""
    run = run_id()
    small = fault_settings(tansu.bootstrap, kafka_max_message_bytes=64 * 1024)
    sender = bus.Publisher(fault_settings(tansu.bootstrap))
    topics = [
        (CANDIDATES, candidate),
        (RELABEL_REQUESTS, relabel),  # new queries and product changes alike
        (LABELS, label),
        (SERVED, served),
    ]
    for topic, make in topics:
        for i in range(3):
            sender.publish(topic, f"{run}-{i}", make(f"{run}-{i}", 10))
        sender.publish(topic, f"{run}-big", make(f"{run}-big", 200_000))
        sender.publish_raw(topic.name, f"{run}-bad".encode(), b"\xff\xff not protobuf")
        sender.publish_raw(topic.name, f"{run}-empty".encode(), b"")
    sender.flush()
    sender.close()
    for topic, _ in topics:
        handled: list[str] = []
        publisher = bus.Publisher(small)
        group = f"poison-{topic.name}-{run}"

        def handler(deliveries, handled=handled):
            handled.extend(d.key for d in deliveries if d.key.startswith(run))
            return []

        loop = bus.ConsumerLoop(small, topic, group, handler, publisher)
        thread = run_loop(loop)
        done = lambda g=group, t=topic: committed(tansu.bootstrap, g, t) >= 6  # noqa: E731
        wait_for(done, 60, f"{topic.name} to commit")
        loop.stop()
        thread.join(30)
        publisher.close()
        letters = [m for m in read_all(tansu.bootstrap, DLQ) if m.consumer_group == group]
        assert sorted(handled) == [f"{run}-{i}" for i in range(3)], topic.name
        assert sorted(m.error_type for m in letters) == [
            "DecodeError",
            "EmptyPayload",
            "MessageTooLarge",
        ], topic.name
        assert len(handled) + len(letters) == 6  # inputs = outputs + dead letters
        oversized = next(m for m in letters if m.error_type == "MessageTooLarge")
        assert oversized.payload == b"" and oversized.payload_size > 200_000


def candidate(query_id: str, size: int) -> topics_pb2.CandidateBatch:
    return topics_pb2.CandidateBatch(
        query_id=query_id,
        query="q" * size,
        products=[common_pb2.Product(product_id="p1", title="Grey sofa")],
    )


def relabel(query_id: str, size: int) -> topics_pb2.RelabelRequest:
    return topics_pb2.RelabelRequest(
        new_query=topics_pb2.NewQuery(query_id=query_id, query="q" * size)
    )


def label(query_id: str, size: int) -> topics_pb2.LabelRecord:
    return topics_pb2.LabelRecord(query_id=query_id, query="q" * size)


def served(query_id: str, size: int) -> topics_pb2.ServedSample:
    return topics_pb2.ServedSample(request_id=query_id, query_id=query_id, query="q" * size)
