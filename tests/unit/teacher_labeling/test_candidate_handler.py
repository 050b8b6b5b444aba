"""The labeling workers' handler: every published label carries the teacher's rationale
distributions (or none), and the explained pairs' outcomes are the service's metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY
from relevance.v1 import common_pb2, topics_pb2

from contracts.schema import Match
from contracts.topics import LABELS
from services.core import bus
from services.teacher_labeling.service import CandidateLabelingHandler
from training.teacher.explain import Rationale
from training.teacher.labeler import LabelerStats, TeacherLabel

PROBS = ((0.1, 0.8, 0.1), (0.6, 0.2, 0.2), (0.1, 0.1, 0.8))


class FakeLabeler:
    """Labels every pair alike; with ``rationale`` each label has one, and every call
    counts one malformed generation among its explained pairs."""

    name, version = "fake", "v1"

    def __init__(self, rationale: bool) -> None:
        self.rationale = rationale
        self.stats = LabelerStats()
        self.explain_calls: list[bool] = []

    def label(
        self, pairs: Sequence[tuple[str, Mapping[str, Any]]], explain: bool = False
    ) -> list[TeacherLabel]:
        self.explain_calls.append(explain)
        if explain and self.rationale:
            self.stats.explained += len(pairs)
            self.stats.malformed_generations += 1
        rationale = (
            Rationale(Match.MATCH, Match.NOT_STATED, Match.MISMATCH, "reasoning", PROBS)
            if self.rationale
            else None
        )
        return [TeacherLabel((0.1, 0.1, 0.1, 0.7), 2.4, rationale) for _ in pairs]


class Collecting:
    def __init__(self) -> None:
        self.records: list[topics_pb2.LabelRecord] = []

    def publish(self, topic: Any, key: str, record: topics_pb2.LabelRecord) -> None:
        assert topic == LABELS
        self.records.append(record)


def batch(query_id: str, products: int) -> bus.Delivery:
    message = topics_pb2.CandidateBatch(
        query_id=query_id,
        query=f"query {query_id}",
        products=[common_pb2.Product(product_id=f"p{i}", title=f"t{i}") for i in range(products)],
    )
    return bus.Delivery(None, message)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_published_labels_carry_the_rationale_and_the_metrics_count_them() -> None:
    labeler, publisher = FakeLabeler(rationale=True), Collecting()
    before = {
        "rationale": metric("relkd_teacher_rationale_labels_total"),
        "malformed": metric("relkd_teacher_explained_pairs_total", outcome="malformed"),
        "well_formed": metric("relkd_teacher_explained_pairs_total", outcome="well_formed"),
    }
    handler = CandidateLabelingHandler(labeler, publisher)  # type: ignore[arg-type]
    assert handler([batch("q1", 3), batch("q2", 2)]) == []
    assert labeler.explain_calls == [True]
    assert len(publisher.records) == 5
    for record in publisher.records:
        assert record.HasField("rationale")
        got = (
            record.rationale.category_probs,
            record.rationale.brand_probs,
            record.rationale.attribute_probs,
        )
        for values, expected in zip(got, PROBS, strict=True):
            assert list(values) == pytest.approx(expected)
        assert record.rationale.attribute_match == common_pb2.MATCH_STATUS_MISMATCH
    assert metric("relkd_teacher_rationale_labels_total") - before["rationale"] == 5
    malformed = metric("relkd_teacher_explained_pairs_total", outcome="malformed")
    well_formed = metric("relkd_teacher_explained_pairs_total", outcome="well_formed")
    assert (malformed - before["malformed"], well_formed - before["well_formed"]) == (1, 4)


def test_a_label_without_rationale_is_published_without_one() -> None:
    labeler, publisher = FakeLabeler(rationale=False), Collecting()
    before = metric("relkd_teacher_rationale_labels_total")
    handler = CandidateLabelingHandler(labeler, publisher, explain=False)  # type: ignore[arg-type]
    assert handler([batch("q1", 2)]) == []
    assert labeler.explain_calls == [False]
    assert [r.HasField("rationale") for r in publisher.records] == [False, False]
    assert metric("relkd_teacher_rationale_labels_total") == before
