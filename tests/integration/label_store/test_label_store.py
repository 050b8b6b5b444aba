"""The label store service on a real broker (Tansu and noida-db): one row per (pair,
teacher version) however often a label is delivered, product changes reach the products
table, snapshots never change once cut, every message in is accounted for."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import DLQ, LABELS, RELABEL_REQUESTS, pair_key
from services.core.settings import Settings
from services.label_store.service import LabelStoreWorkers
from services.label_store.settings import LabelStoreSettings
from services.label_store.writer import cut_snapshot, pending, wait_until_stored

pytestmark = pytest.mark.integration


def label(qid: str, pid: str, version: str, probs: list[float], at_s: int) -> bytes:
    record = topics_pb2.LabelRecord(
        pair_key=pair_key(qid, pid),
        query_id=qid,
        query=f"query {qid}",
        product_id=pid,
        grades=common_pb2.GradeDistribution(probs=probs),
        expected_score=sum(g * p for g, p in enumerate(probs)),
        teacher=common_pb2.ModelRef(name="teacher", version=version),
    )
    record.meta.produced_at.FromSeconds(at_s)
    return record.SerializeToString()


def product_change(at_s: int, **titles: str) -> bytes:
    request = topics_pb2.RelabelRequest(
        product_changed=topics_pb2.ProductChanged(
            products=[common_pb2.Product(product_id=p, title=t) for p, t in titles.items()]
        )
    )
    request.meta.produced_at.FromSeconds(at_s)
    return request.SerializeToString()


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def producer(settings: Settings) -> Iterator[KafkaProducer]:
    """A plain kafka-python producer: the store must not depend on the platform's bus."""
    client = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    yield client
    client.close()


def start_store(settings: Settings, store: Path, group: str) -> LabelStoreWorkers:
    # No threshold cuts: the test cuts on demand, as `relkd labels snapshot` does.
    own = LabelStoreSettings(dir=store, group=group, snapshot_min_rows=10**9)
    workers = LabelStoreWorkers(settings, own)
    workers.start()
    return workers


def test_store_keeps_one_row_per_pair_and_version_and_fresh_product_text(
    settings: Settings, producer: KafkaProducer, read_topic, tmp_path: Path
) -> None:
    run, store = uuid.uuid4().hex[:8], tmp_path / "store"
    q1, q2 = f"{run}-q1", f"{run}-q2"
    labels = [
        label(q1, "p1", "v1", [0.7, 0.1, 0.1, 0.1], 100),
        label(q1, "p2", "v1", [0.1, 0.1, 0.1, 0.7], 100),
        label(q1, "p2", "v1", [0.1, 0.1, 0.1, 0.7], 100),  # redelivered
        label(q1, "p1", "v2", [0.0, 0.0, 0.2, 0.8], 200),  # relabeled by a newer teacher
        label(q2, "p3", "v1", [0.5, 0.5], 100),  # not a 4-grade distribution
    ]
    for payload in labels:
        producer.send(LABELS.name, key=b"k", value=payload)
    producer.send(
        RELABEL_REQUESTS.name,
        key=b"k",
        value=product_change(100, **{f"{run}-p1": "old", f"{run}-new": "new product"}),
    )
    producer.send(
        RELABEL_REQUESTS.name, key=b"k", value=product_change(300, **{f"{run}-p1": "edited"})
    )
    producer.flush()

    workers = start_store(settings, store, f"store-{run}")
    try:
        wait_until_stored(store, {q1: 2}, timeout_s=30, poll_s=0.2)
        deadline = time.monotonic() + 30
        while pending(store).products < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        workers.stop()
    first = cut_snapshot(store)
    assert first is not None
    mine = [x for x in first.iter_labels() if x.query_id.startswith(run)]
    assert sorted((x.product_id, x.teacher_version) for x in mine) == [
        ("p1", "v1"),
        ("p1", "v2"),
        ("p2", "v1"),
    ]
    newest = {r["product_id"]: r for r in first.teacher_labels().to_pylist() if r["query_id"] == q1}
    assert newest["p1"]["teacher_version"] == "v2"
    assert first.product(f"{run}-p1")["title"] == "edited"
    assert first.product(f"{run}-new")["title"] == "new product"
    # Counts in = counts out: 5 labels in = 3 kept + 1 duplicate folded + 1 dead letter.
    letters = [
        d
        for d in read_topic(DLQ, expect=1)
        if d.source_topic == LABELS.name and run in str(d.payload)
    ]
    assert len(letters) == 1 and letters[0].reason.startswith("grades.probs")
    assert letters[0].consumer_group == f"store-{run}"
    before = digest(first.path)

    # A second group replays the whole topic into the same store (offsets lost, say):
    # nothing is duplicated, and the older snapshot does not change.
    producer.send(LABELS.name, key=b"k", value=label(q2, "p4", "v1", [0.25] * 4, 300))
    producer.flush()
    workers = start_store(settings, store, f"store-{run}-replay")
    try:
        wait_until_stored(store, {q1: 2, q2: 1}, timeout_s=30, poll_s=0.2)
    finally:
        workers.stop()
    second = cut_snapshot(store)
    assert second is not None and second.parent == first.id
    mine = [x for x in second.iter_labels() if x.query_id.startswith(run)]
    assert (
        len(mine) == 4 and len({(x.query_id, x.product_id, x.teacher_version) for x in mine}) == 4
    )
    assert second.product(f"{run}-p1")["title"] == "edited"
    assert digest(first.path) == before
