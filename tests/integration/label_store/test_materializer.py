"""The materializer turns the labels topic into the teacher_labels table: newest
teacher wins per pair, redelivered batches do not duplicate rows, bad labels go to
the dead-letter topic."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import LABELS, pair_key
from services.core import bus
from services.core.settings import Settings
from services.label_store.materializer import LabelShardWriter, compact, materialize
from training.data import storage

pytestmark = pytest.mark.integration


def label(
    qid: str, pid: str, version: str, probs: list[float], at_s: int
) -> topics_pb2.LabelRecord:
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
    return record


def new_dataset(tmp_path: Path) -> Path:
    storage.write_manifest(tmp_path, source="test", seed=0)
    return tmp_path


def test_newest_teacher_wins_and_invalid_labels_are_dead_lettered(
    settings: Settings, tmp_path: Path
) -> None:
    dataset = new_dataset(tmp_path)
    run = uuid.uuid4().hex[:8]
    publisher = bus.Publisher(settings)
    records = [
        label(f"{run}-q1", "p1", "v1", [0.7, 0.1, 0.1, 0.1], 100),
        label(f"{run}-q1", "p2", "v1", [0.1, 0.1, 0.1, 0.7], 100),
        label(f"{run}-q1", "p1", "v2", [0.0, 0.0, 0.2, 0.8], 200),  # relabeled by a newer teacher
        label(f"{run}-q1", "p2", "v1", [0.1, 0.1, 0.1, 0.7], 100),  # redelivered duplicate
        label(f"{run}-q2", "p3", "v1", [0.5, 0.5], 100),  # not a 4-grade distribution
    ]
    for record in records:
        publisher.publish(LABELS, record.pair_key, record)
    publisher.close()

    rows = materialize(settings, dataset, group=f"mat-{run}", idle_s=3, timeout_s=60, expected=4)
    table = storage.read_table(dataset, "teacher_labels").to_pylist()
    mine = {(r["query_id"], r["product_id"]): r for r in table if r["query_id"].startswith(run)}
    assert rows == len(table)
    assert set(mine) == {(f"{run}-q1", "p1"), (f"{run}-q1", "p2")}
    assert mine[(f"{run}-q1", "p1")]["teacher_version"] == "v2"
    assert mine[(f"{run}-q1", "p1")]["grade_probs"] == pytest.approx([0.0, 0.0, 0.2, 0.8])


def test_a_batch_written_twice_after_a_crash_is_not_duplicated(tmp_path: Path) -> None:
    dataset = new_dataset(tmp_path)
    writer = LabelShardWriter(dataset)
    batch = [bus.Delivery(None, label("q", f"p{i}", "v1", [0.25] * 4, 1)) for i in range(3)]
    writer(batch)
    writer(batch[1:])  # the crashed consumer's uncommitted tail, delivered again
    assert compact(dataset) == 3
    assert sorted(
        storage.read_table(dataset, "teacher_labels").column("product_id").to_pylist()
    ) == ["p0", "p1", "p2"]
