"""Producers of relabel requests: the served sampler, the disagreement monitor's selection,
and the catalog file reader behind `relkd catalog upsert`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from relevance.v1 import common_pb2, student_inference_pb2, topics_pb2

from contracts.text import query_id_for
from contracts.topics import RELABEL_REQUESTS, SERVED
from ops.relabel import read_products
from services.core import bus
from services.disagreement_monitor.service import (
    DisagreementHandler,
    MonitorSettings,
    ServedPair,
)
from services.student_inference.served import ServedSampler


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def publish(self, topic: Any, key: str, message: Any) -> None:
        self.sent.append((topic.name, key, message))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _score(query: str, n: int) -> tuple[student_inference_pb2.ScoreRequest, Any]:
    request = student_inference_pb2.ScoreRequest(
        query=query,
        products=[
            student_inference_pb2.ScoreProduct(product_id=f"p{i}", title=f"sofa {i}")
            for i in range(n)
        ],
    )
    response = student_inference_pb2.ScoreResponse(
        scores=[
            student_inference_pb2.ProductScore(product_id=f"p{i}", score=i / 2) for i in range(n)
        ],
        model=common_pb2.ModelRef(name="student", version="s1"),
        request_id="r1",
    )
    return request, response


def test_served_sampler_publishes_its_share_with_scores_and_model() -> None:
    publisher = RecordingPublisher()
    request, response = _score("Red Sofa", 3)
    assert not ServedSampler(publisher, 0.0).offer(request, response)  # type: ignore[arg-type]
    assert ServedSampler(publisher, 1.0).offer(request, response)  # type: ignore[arg-type]
    [(topic, key, sample)] = publisher.sent
    assert topic == SERVED.name and key == query_id_for("red sofa") == sample.query_id
    assert [(p.product_id, p.title, p.score) for p in sample.products] == [
        ("p0", "sofa 0", 0.0),
        ("p1", "sofa 1", 0.5),
        ("p2", "sofa 2", 1.0),
    ]
    assert sample.student.version == "s1" and sample.request_id == "r1"
    sampler = ServedSampler(publisher, 0.25, seed=7)
    hits = sum(sampler.offer(request, response) for _ in range(4000))  # type: ignore[arg-type]
    assert 850 < hits < 1150
    with pytest.raises(ValueError, match="served_sample_rate"):
        ServedSampler(publisher, 1.5)  # type: ignore[arg-type]


class TableTeacher:
    """Expected grades by product id; records the size of each call."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.calls: list[int] = []

    def expected_scores(self, pairs: Sequence[ServedPair]) -> tuple[list[float], str]:
        self.calls.append(len(pairs))
        return [self.scores[p.product.product_id] for p in pairs], "t1"


class FixedKnown:
    def __init__(self, ids: set[str]) -> None:
        self._ids = ids

    def ids(self) -> set[str]:
        return self._ids


def _sample(query: str, scores: dict[str, float]) -> bus.Delivery:
    sample = topics_pb2.ServedSample(
        query_id=query_id_for(query),
        query=query,
        products=[
            topics_pb2.ServedProduct(product_id=pid, title=f"title {pid}", score=s)
            for pid, s in scores.items()
        ],
        student=common_pb2.ModelRef(name="student", version="s1"),
    )
    return bus.Delivery(record=None, message=sample)  # type: ignore[arg-type]


def test_monitor_flags_the_top_share_of_gaps_and_unseen_queries_once() -> None:
    teacher = TableTeacher({f"p{i}": 1.0 for i in range(10)})
    publisher = RecordingPublisher()
    own = MonitorSettings(top_share=0.2, min_gap=0.5, label_batch_pairs=4, pairs_per_second=1e6)
    known = FixedKnown({query_id_for("known sofa")})
    handler = DisagreementHandler(teacher, publisher, own, known)  # type: ignore[arg-type]
    # Gaps 0.0 .. 0.7 and then 0.9 and 2.0: the top 20% of these 10 pairs are the last two.
    first = {f"p{i}": 1.0 + i / 10 for i in range(8)}
    second = {"p8": 3.0, "p9": -0.9 + 1.0}
    rejected = handler(
        [
            _sample("known sofa", first),
            _sample("new rug", second),
            bus.Delivery(record=None, message=topics_pb2.ServedSample(query="x")),  # type: ignore[arg-type]
        ]
    )
    assert [r.reason for r in rejected] == ["query_id: must not be empty"]
    assert teacher.calls == [4, 4, 2]  # batched by label_batch_pairs
    assert {topic for topic, _, _ in publisher.sent} == {RELABEL_REQUESTS.name}
    kinds = [m.WhichOneof("kind") for _, _, m in publisher.sent]
    flagged = [m.disagreement for _, _, m in publisher.sent if m.HasField("disagreement")]
    assert kinds.count("new_query") == 1
    new_query = next(m.new_query for _, _, m in publisher.sent if m.HasField("new_query"))
    assert new_query.query == "new rug" and new_query.query_id == query_id_for("new rug")
    assert sorted(d.product_id for d in flagged) == ["p8", "p9"]
    p8 = next(d for d in flagged if d.product_id == "p8")
    assert (p8.student_score, p8.teacher_score, p8.query) == (3.0, 1.0, "new rug")
    # The same traffic again: no second new_query, and identical event ids (idempotent).
    ids = {m.meta.event_id for _, _, m in publisher.sent if m.HasField("disagreement")}
    publisher.sent.clear()
    handler([_sample("new rug", second)])
    assert [m.WhichOneof("kind") for _, _, m in publisher.sent] == ["disagreement"] * 2
    assert {m.meta.event_id for _, _, m in publisher.sent} == ids


def test_monitor_never_flags_gaps_below_min_gap() -> None:
    teacher = TableTeacher({"a": 1.0, "b": 1.0})
    publisher = RecordingPublisher()
    own = MonitorSettings(top_share=0.5, min_gap=0.5, pairs_per_second=1e6)
    handler = DisagreementHandler(teacher, publisher, own, None)  # type: ignore[arg-type]
    handler([_sample("sofa", {"a": 1.1, "b": 1.2})])
    assert publisher.sent == []  # top half, but the student is within half a grade


def test_monitor_flags_wrong_pairs_far_more_often_than_random_sampling() -> None:
    # 50 queries x 20 products; teacher and student both near the true grade, except a
    # known 10% of pairs where the student is two grades off: the pairs to find.
    rng = np.random.default_rng(0)
    truth = {f"q{q}-p{i}": float(rng.integers(0, 4)) for q in range(50) for i in range(20)}
    broken = set(rng.choice(sorted(truth), len(truth) // 10, replace=False).tolist())
    teacher = TableTeacher({pid: g + rng.normal(0, 0.2) for pid, g in truth.items()})
    student = {
        pid: (g + 2 if g < 2 else g - 2) if pid in broken else g + rng.normal(0, 0.2)
        for pid, g in truth.items()
    }
    publisher = RecordingPublisher()
    own = MonitorSettings(top_share=0.1, min_gap=0.5, pairs_per_second=1e6)
    handler = DisagreementHandler(teacher, publisher, own, None)  # type: ignore[arg-type]
    for first in range(0, 50, 5):  # consumer batches of five samples
        handler(
            [
                _sample(f"query {q}", {f"q{q}-p{i}": student[f"q{q}-p{i}"] for i in range(20)})
                for q in range(first, first + 5)
            ]
        )
    flagged = [m.disagreement.product_id for _, _, m in publisher.sent]
    wrong = {pid for pid in truth if abs(student[pid] - truth[pid]) >= 1}
    assert wrong == broken and 50 <= len(flagged) <= 150
    precision = sum(pid in wrong for pid in flagged) / len(flagged)
    randoms = [
        sum(pid in wrong for pid in np.random.default_rng(seed).choice(sorted(truth), len(flagged)))
        / len(flagged)
        for seed in range(5)
    ]
    assert precision >= 0.8 and max(randoms) < 0.25 < precision


def test_read_products_from_jsonl_and_parquet(tmp_path: Path) -> None:
    rows = [
        {"product_id": "p1", "title": "Red sofa", "attributes": {"color": "red"}},
        {"product_id": "p2", "title": "Oak table", "brand": "Acme"},
    ]
    jsonl = tmp_path / "products.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert [r["product_id"] for r in read_products(jsonl)] == ["p1", "p2"]
    parquet = tmp_path / "products.parquet"
    pq.write_table(pa.Table.from_pylist([{"product_id": "p3", "title": "Rug"}]), parquet)
    assert read_products(parquet) == [{"product_id": "p3", "title": "Rug"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"product_id": "p1", "title": "ok"}\n{"product_id": "p2", "title": " "}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: title: must be a non-empty string"):
        read_products(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not JSON"):
        read_products(bad)
