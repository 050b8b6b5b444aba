"""The relabel backlog: priorities, the hourly budget, idempotent queueing, progress."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from contracts import schema
from services.candidate_generation.requeue import (
    HOUR_S,
    RelabelBacklog,
    StalePair,
    boundary_distance,
    pairs_of,
)


def test_boundary_distance() -> None:
    assert boundary_distance(1.5) == 0.0
    assert boundary_distance(3.0) == 0.5
    assert round(boundary_distance(0.8), 6) == 0.3


def test_most_served_first_then_nearest_a_grade_boundary(tmp_path: Path) -> None:
    backlog = RelabelBacklog(tmp_path / "b.sqlite", pairs_per_hour=100)
    pairs = [
        StalePair("q1", "sofa", "far", 3.0),
        StalePair("q1", "sofa", "near", 2.45),
        StalePair("q1", "sofa", "served-once", 0.0),
        StalePair("q2", "rug", "served-twice", 3.0),
    ]
    assert backlog.enqueue("v2", pairs) == 4
    assert backlog.enqueue("v2", pairs) == 0  # a redelivered request queues nothing twice
    backlog.record_served([("q1", "served-once"), ("q2", "served-twice")])
    backlog.record_served([("q2", "served-twice"), ("q9", "not-queued")])
    order = [p.product_id for _, p in backlog.next_pairs(10)]
    assert order == ["served-twice", "served-once", "near", "far"]
    assert [p.product_id for _, p in backlog.next_pairs(2)] == ["served-twice", "served-once"]


def test_budget_is_a_sliding_hour_of_requeued_pairs(tmp_path: Path) -> None:
    backlog = RelabelBacklog(tmp_path / "b.sqlite", pairs_per_hour=2)
    pairs = [StalePair("q", "sofa", f"p{i}", 0.0) for i in range(3)]
    backlog.enqueue("v2", pairs)
    assert backlog.budget_left() == 2
    backlog.mark("v2", pairs[:2], "requeued")
    assert backlog.budget_left() == 0
    assert [p.product_id for _, p in backlog.next_pairs(5)] == ["p2"]
    import time

    assert backlog.budget_left(now=time.time() + HOUR_S + 1) == 2
    backlog.mark("v2", pairs[2:], "missing")  # missing pairs do not spend the budget
    assert backlog.budget_left() == 0 and backlog.next_pairs(5) == []
    [progress] = backlog.progress()
    assert (progress.queued, progress.requeued, progress.missing, progress.pending) == (3, 2, 1, 0)
    backlog.close()
    # The state survives a restart.
    again = RelabelBacklog(tmp_path / "b.sqlite", pairs_per_hour=2)
    assert again.progress() == [progress]


def test_pairs_of_a_teacher_labels_table() -> None:
    rows = [
        ("q1", "sofa", "p1", 2.0, "v1"),
        ("q1", "sofa", "p2", 1.0, "v2"),
        ("q2", "rug", "p3", 0.5, "v0"),
    ]
    table = pa.table(
        {
            "query_id": [r[0] for r in rows],
            "query": [r[1] for r in rows],
            "product_id": [r[2] for r in rows],
            "grade_probs": [[0.25] * 4] * 3,
            "expected_score": [r[3] for r in rows],
            "teacher_model": ["t"] * 3,
            "teacher_version": [r[4] for r in rows],
            "category_match": [0] * 3,
            "brand_match": [0] * 3,
            "attribute_match": [0] * 3,
            **{name: [None] * 3 for name in schema.RATIONALE_PROBS_FIELDS},
        },
        schema=schema.TEACHER_LABELS,
    )
    assert pairs_of(table) == [
        StalePair("q1", "sofa", "p1", 2.0),
        StalePair("q1", "sofa", "p2", 1.0),
        StalePair("q2", "rug", "p3", 0.5),
    ]
