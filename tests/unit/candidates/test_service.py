from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import CANDIDATES
from services.candidate_generation.index import CatalogIndex, MiniLMEncoder
from services.candidate_generation.queries import LOG, QueryRecord
from services.candidate_generation.requeue import RelabelBacklog, RequeueDrain, StalePair
from services.candidate_generation.service import CandidateEngine, QueryPool, RelabelHandler
from services.candidate_generation.settings import CandidateSettings
from services.core import bus


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def publish(self, topic: Any, key: str, message: Any) -> None:
        self.sent.append((topic.name, key, message))

    def flush(self) -> None:
        pass


def _engine(saved_index: Path, encoder: MiniLMEncoder, tmp_path: Path) -> CandidateEngine:
    CatalogIndex.load(saved_index, encoder).save(tmp_path / "index")
    own = CandidateSettings(index_dir=tmp_path / "index", per_query=6, sample_depth=30)
    engine = CandidateEngine.from_settings(own, encoder)
    engine.add_known_queries(
        [QueryRecord("rugs", "wool area rug", LOG), QueryRecord("lamps", "oak table lamp", LOG)]
    )
    return engine


def _delivery(request: topics_pb2.RelabelRequest) -> bus.Delivery:
    return bus.Delivery(record=None, message=request)  # type: ignore[arg-type]


def test_query_pool_finds_nearest_queries() -> None:
    pool = QueryPool()
    pool.add([QueryRecord("a", "a", LOG), QueryRecord("b", "b", LOG)], np.eye(2, dtype=np.float32))
    pool.add([QueryRecord("a", "a", LOG)], np.eye(2, dtype=np.float32)[:1])  # known: ignored
    assert len(pool.records) == 2
    nearest = pool.nearest(np.array([[0.1, 0.9]], dtype=np.float32), 1)
    assert [[r.query_id for r in row] for row in nearest] == [["b"]]


def test_relabel_handler_emits_candidates_for_both_kinds(
    saved_index: Path, encoder: MiniLMEncoder, tmp_path: Path
) -> None:
    engine = _engine(saved_index, encoder, tmp_path)
    engine.settings.queries_per_changed_product = 1
    publisher = RecordingPublisher()
    handler = RelabelHandler(engine, publisher)  # type: ignore[arg-type]
    changed = common_pb2.Product(
        product_id="p001", title="Shaggy wool area rug", product_type="area rug"
    )
    rejected = handler(
        [
            _delivery(
                topics_pb2.RelabelRequest(
                    product_changed=topics_pb2.ProductChanged(products=[changed])
                )
            ),
            _delivery(
                topics_pb2.RelabelRequest(new_query=topics_pb2.NewQuery(query="grey office chair"))
            ),
            _delivery(topics_pb2.RelabelRequest(new_query=topics_pb2.NewQuery(query="  "))),
            _delivery(topics_pb2.RelabelRequest()),
        ]
    )
    assert sorted(r.reason for r in rejected) == [
        "kind: no request kind is set (or one this service does not know)",
        "new_query.query: must not be empty",
    ]
    assert {topic for topic, _, _ in publisher.sent} == {CANDIDATES.name}
    batches = {key: batch for _, key, batch in publisher.sent}
    # The rug query is the known query nearest to the changed rug; it gets just that product.
    assert [p.title for p in batches["rugs"].products] == ["Shaggy wool area rug"]
    own_query = [
        b for k, b in batches.items() if k not in ("rugs",) and "office chair" not in b.query
    ]
    assert len(own_query) == 1 and "p001" in {p.product_id for p in own_query[0].products}
    chair = next(b for b in batches.values() if b.query == "grey office chair")
    assert len(chair.products) == 6 and chair.source == "relabel"
    assert all(b.index_version == engine.index.version for b in batches.values())
    assert (
        engine.index.products_at([engine.index.row_of("p001")])[0]["title"]
        == "Shaggy wool area rug"
    )
    assert "grey office chair" in {r.query for r in engine.pool.records}


def test_invalid_changed_product_is_rejected_by_field(
    saved_index: Path, encoder: MiniLMEncoder, tmp_path: Path
) -> None:
    engine = _engine(saved_index, encoder, tmp_path)
    version = engine.index.version
    publisher = RecordingPublisher()
    bad = common_pb2.Product(product_id="p9", title="")
    rejected = RelabelHandler(engine, publisher)(  # type: ignore[arg-type]
        [
            _delivery(
                topics_pb2.RelabelRequest(product_changed=topics_pb2.ProductChanged(products=[bad]))
            )
        ]
    )
    assert [r.reason for r in rejected] == ["product_changed.products[0].title: must not be empty"]
    assert publisher.sent == [] and engine.index.version == version


class FixedLabels:
    """A label store holding the given pairs, all under teacher version "old"."""

    def __init__(self, pairs: list[StalePair]) -> None:
        self.pairs = pairs
        self.asked: list[str] = []

    def stale_pairs(self, teacher_version: str) -> list[StalePair]:
        self.asked.append(teacher_version)
        return self.pairs


def test_teacher_changed_requeues_stale_pairs_and_disagreement_gets_neighbours(
    saved_index: Path, encoder: MiniLMEncoder, tmp_path: Path
) -> None:
    engine = _engine(saved_index, encoder, tmp_path)
    publisher = RecordingPublisher()
    backlog = RelabelBacklog(tmp_path / "backlog.sqlite", pairs_per_hour=3)
    drain = RequeueDrain(backlog, engine.require_index, publisher)  # type: ignore[arg-type]
    stale = [
        StalePair("rugs", "wool area rug", "p010", 3.0),
        StalePair("rugs", "wool area rug", "p011", 1.45),  # nearest a boundary
        StalePair("lamps", "oak table lamp", "p020", 0.1),
        StalePair("lamps", "oak table lamp", "gone", 1.5),  # no longer in the catalog
    ]
    labels = FixedLabels(stale)
    handler = RelabelHandler(engine, publisher, drain, labels)  # type: ignore[arg-type]
    changed = topics_pb2.TeacherChanged(teacher=common_pb2.ModelRef(name="t", version="v2"))
    rejected = handler(
        [
            _delivery(topics_pb2.RelabelRequest(teacher_changed=changed)),
            _delivery(
                topics_pb2.RelabelRequest(
                    disagreement=topics_pb2.Disagreement(
                        query="navy leather sofa",
                        product_id="p005",
                        student_score=3,
                        teacher_score=0,
                    )
                )
            ),
            _delivery(
                topics_pb2.RelabelRequest(
                    disagreement=topics_pb2.Disagreement(query="sofa", product_id="nope")
                )
            ),
            _delivery(topics_pb2.RelabelRequest(teacher_changed=topics_pb2.TeacherChanged())),
        ]
    )
    assert sorted(r.reason for r in rejected) == [
        "disagreement.product_id: 'nope' is not in the catalog index",
        "teacher_changed.teacher.version: must not be empty",
    ]
    assert labels.asked == ["v2"]
    batches = [b for _, _, b in publisher.sent]
    disputed = next(b for b in batches if b.source == "disagreement")
    ids = [p.product_id for p in disputed.products]
    # The disputed product first, then its nearest catalog neighbours (other sofas).
    assert ids[0] == "p005" and len(ids) == 6 and len(set(ids)) == 6
    assert all(p.product_type == "sofa" for p in disputed.products[:4])
    assert "navy leather sofa" in {r.query for r in engine.pool.records}
    # Budget 3 pairs/hour, nearest a grade boundary first: the vanished product is taken
    # first but only marked missing (nothing to relabel, no budget spent).
    requeued = [b for b in batches if b.source == "teacher_changed"]
    assert sorted((b.query_id, p.product_id) for b in requeued for p in b.products) == [
        ("lamps", "p020"),
        ("rugs", "p011"),
    ]
    assert backlog.budget_left() == 1
    # A redelivered request queues nothing new; the next drain spends the rest of the budget.
    publisher.sent.clear()
    handler([_delivery(topics_pb2.RelabelRequest(teacher_changed=changed))])
    assert [(b.query_id, [p.product_id for p in b.products]) for _, _, b in publisher.sent] == [
        ("rugs", ["p010"])
    ]
    [progress] = backlog.progress()
    assert (progress.queued, progress.requeued, progress.missing, progress.pending) == (4, 3, 1, 0)
    assert backlog.budget_left() == 0 and drain.drain_once() == 0


def test_teacher_changed_without_a_label_store_is_dead_lettered(
    saved_index: Path, encoder: MiniLMEncoder, tmp_path: Path
) -> None:
    engine = _engine(saved_index, encoder, tmp_path)
    request = topics_pb2.RelabelRequest(
        teacher_changed=topics_pb2.TeacherChanged(teacher=common_pb2.ModelRef(version="v2"))
    )
    rejected = RelabelHandler(engine, RecordingPublisher())([_delivery(request)])  # type: ignore[arg-type]
    assert [r.reason.split(":")[0] for r in rejected] == ["teacher_changed"]
