"""The label store's snapshots through its read API: one row per (pair, teacher
version) however often a batch is written, latest product text, immutable snapshots."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from relevance.v1 import common_pb2, topics_pb2

from contracts.label_snapshots import SnapshotNotFound
from contracts.schema import RATIONALE_PROBS_FIELDS
from contracts.topics import pair_key
from services.core import bus
from services.label_store.store import LabelStore
from services.label_store.writer import (
    LabelsHandler,
    ProductChangesHandler,
    cut_snapshot,
    incoming_dir,
    pending,
    remove_crash_leftovers,
)
from training.data import storage


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


def product_change(at_s: int, **titles: str) -> topics_pb2.RelabelRequest:
    request = topics_pb2.RelabelRequest(
        product_changed=topics_pb2.ProductChanged(
            products=[common_pb2.Product(product_id=pid, title=t) for pid, t in titles.items()]
        )
    )
    request.meta.produced_at.FromSeconds(at_s)
    return request


def deliveries(*messages) -> list[bus.Delivery]:
    return [bus.Delivery(None, m) for m in messages]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_redelivered_batches_keep_one_row_per_pair_and_teacher_version(tmp_path: Path) -> None:
    write = LabelsHandler(tmp_path)
    batch = deliveries(
        label("q1", "p1", "v1", [0.7, 0.1, 0.1, 0.1], 100),
        label("q1", "p2", "v1", [0.1, 0.1, 0.1, 0.7], 100),
    )
    assert write(batch) == []
    assert write(batch[1:]) == []  # a crashed consumer's uncommitted tail, delivered again
    assert write(deliveries(label("q1", "p1", "v2", [0.0, 0.0, 0.2, 0.8], 200))) == []
    assert pending(tmp_path).labels == 4

    snap = cut_snapshot(tmp_path)
    assert snap is not None and snap.id == "000001"
    rows = {(x.query_id, x.product_id, x.teacher_version) for x in snap.iter_labels()}
    assert rows == {("q1", "p1", "v1"), ("q1", "p2", "v1"), ("q1", "p1", "v2")}
    assert snap.counts == {
        "labels": 3,
        "teacher_labels": 2,
        "teacher_labels_with_rationale": 0,
        "products": 0,
    }
    newest = {r["product_id"]: r for r in snap.teacher_labels().to_pylist()}
    assert newest["p1"]["teacher_version"] == "v2"
    assert newest["p1"]["grade_probs"] == pytest.approx([0.0, 0.0, 0.2, 0.8])
    assert snap.teacher_versions() == {"v1": 2, "v2": 1}
    assert snap.known_queries() == {"q1": "query q1"}
    assert snap.stale_pairs("v2").column("product_id").to_pylist() == ["p2"]
    assert pending(tmp_path).labels == 0  # folded shards are gone

    # Redelivery across snapshots: the same row again adds nothing.
    write(batch)
    second = cut_snapshot(tmp_path)
    assert second is not None and second.counts["labels"] == 3


def test_invalid_labels_are_rejected_naming_the_field(tmp_path: Path) -> None:
    bad = deliveries(label("q", "p", "v1", [0.5, 0.5], 1), label("q", "p", "", [0.25] * 4, 1))
    reasons = [r.reason for r in LabelsHandler(tmp_path)(bad)]
    assert reasons[0].startswith("grades.probs") and reasons[1].startswith("teacher.version")
    assert pending(tmp_path).labels == 0


def test_products_keep_their_latest_text_and_old_snapshots_do_not_change(tmp_path: Path) -> None:
    products = ProductChangesHandler(tmp_path)
    products(deliveries(product_change(100, p1="old title", p2="second")))
    LabelsHandler(tmp_path)(deliveries(label("q", "p1", "v1", [0.25] * 4, 1)))
    first = cut_snapshot(tmp_path)
    assert first is not None
    before = digest(first.path)

    products(deliveries(product_change(300, p1="new title")))
    products(deliveries(product_change(200, p1="late older edit")))  # older, arrives later
    products(deliveries(topics_pb2.RelabelRequest(new_query=topics_pb2.NewQuery(query="x"))))
    second = cut_snapshot(tmp_path)
    assert second is not None and second.parent == first.id
    assert second.product("p1")["title"] == "new title"
    assert second.product("p2")["title"] == "second"
    assert first.product("p1")["title"] == "old title"
    assert digest(first.path) == before
    assert cut_snapshot(tmp_path) is None  # nothing new, no new snapshot

    store = LabelStore(tmp_path)
    assert store.snapshot_ids() == ["000001", "000002"]
    assert store.open().id == "000002" and store.open("1").id == "000001"
    with pytest.raises(SnapshotNotFound, match="'7'"):
        store.open("7")
    # A snapshot is a dataset directory the trainers' storage reads.
    assert storage.read_table(second.path, "products").num_rows == 2
    assert storage.read_table(second.path, "teacher_labels").num_rows == 1


def test_a_product_change_without_a_title_is_rejected(tmp_path: Path) -> None:
    reasons = ProductChangesHandler(tmp_path)(deliveries(product_change(1, p1="")))
    assert reasons[0].reason.startswith("product_changed.products[0]")


def test_an_empty_store_has_no_snapshot_until_the_first_cut(tmp_path: Path) -> None:
    with pytest.raises(SnapshotNotFound, match="relkd labels snapshot"):
        LabelStore(tmp_path).open()
    snap = cut_snapshot(tmp_path)
    assert snap is not None and snap.counts == {
        "labels": 0,
        "teacher_labels": 0,
        "teacher_labels_with_rationale": 0,
        "products": 0,
    }


def with_rationale(record: topics_pb2.LabelRecord, **probs: list[float]) -> topics_pb2.LabelRecord:
    """``record`` with a rationale: ``category=[...]`` etc., each field's value its argmax."""
    rationale = common_pb2.Rationale()
    for field, values in probs.items():
        getattr(rationale, f"{field}_probs").extend(values)
        setattr(rationale, f"{field}_match", max(range(len(values)), key=values.__getitem__))
    record.rationale.CopyFrom(rationale)
    return record


def test_rationale_distributions_are_kept_and_counted(tmp_path: Path) -> None:
    full = {"category": [0.1, 0.8, 0.1], "brand": [0.7, 0.2, 0.1], "attribute": [0.2, 0.2, 0.6]}
    published = [
        with_rationale(label("q1", "p1", "v1", [0.1, 0.1, 0.1, 0.7], 100), **full),
        # A field the teacher gave no distribution for stays missing.
        with_rationale(label("q1", "p2", "v1", [0.7, 0.1, 0.1, 0.1], 100), category=[0, 0, 1.0]),
        label("q1", "p3", "v1", [0.7, 0.1, 0.1, 0.1], 100),  # no rationale at all
    ]
    assert LabelsHandler(tmp_path)(deliveries(*published)) == []
    snap = cut_snapshot(tmp_path)
    assert snap is not None
    with_any = sum(1 for record in published if record.HasField("rationale"))
    assert snap.counts["teacher_labels_with_rationale"] == with_any == 2
    rows = {r["product_id"]: r for r in snap.teacher_labels().to_pylist()}
    assert rows["p1"]["category_match"] == 1 and rows["p1"]["attribute_match"] == 2
    for field, values in full.items():
        assert rows["p1"][f"{field}_match_probs"] == pytest.approx(values)
    assert rows["p2"]["category_match_probs"] == pytest.approx([0, 0, 1])
    assert rows["p2"]["brand_match_probs"] is None
    # Missing is null, never NOT_STATED (0): the students mask it.
    assert {k: rows["p3"][k] for k in ("category_match", "category_match_probs")} == {
        "category_match": None,
        "category_match_probs": None,
    }
    by_pair = {x.product_id: x for x in snap.iter_labels()}
    assert by_pair["p1"].brand_match_probs == pytest.approx(tuple(full["brand"]))
    assert by_pair["p3"].category_match is None and by_pair["p3"].brand_match_probs is None


@pytest.mark.parametrize(
    ("probs", "problem"),
    [
        ({"brand": [0.5, 0.5]}, "rationale.brand_probs: expected 3 probabilities, got 2"),
        ({"attribute": [0.5, 0.6, 0.1]}, "rationale.attribute_probs: not a distribution"),
    ],
)
def test_a_bad_rationale_distribution_is_rejected_naming_the_field(
    tmp_path: Path, probs: dict[str, list[float]], problem: str
) -> None:
    record = with_rationale(label("q1", "p1", "v1", [0.1, 0.1, 0.1, 0.7], 100), **probs)
    rejected = LabelsHandler(tmp_path)(deliveries(record))
    assert len(rejected) == 1 and rejected[0].reason.startswith(problem)
    assert pending(tmp_path).labels == 0


def test_a_snapshot_cut_before_the_distributions_existed_still_reads(tmp_path: Path) -> None:
    """Stores written by the previous release lack the *_probs columns: they read as
    missing, and the next cut carries the old rows forward with nulls there."""
    LabelsHandler(tmp_path)(deliveries(label("q1", "p1", "v1", [0.1, 0.1, 0.1, 0.7], 100)))
    old = cut_snapshot(tmp_path)
    assert old is not None
    for name in ("labels.parquet", "teacher_labels.parquet"):
        path = old.path / name
        table = pq.read_table(path)
        path.chmod(0o644)
        pq.write_table(table.drop_columns(list(RATIONALE_PROBS_FIELDS)), path)
    assert old.teacher_labels().column("brand_match_probs").null_count == 1
    assert next(old.iter_labels()).category_match_probs is None
    LabelsHandler(tmp_path)(deliveries(label("q1", "p2", "v1", [0.7, 0.1, 0.1, 0.1], 200)))
    new = cut_snapshot(tmp_path)
    assert new is not None and new.counts["teacher_labels"] == 2
    assert new.counts["teacher_labels_with_rationale"] == 0


def test_temp_files_of_a_killed_writer_are_removed_and_shards_kept(tmp_path: Path) -> None:
    write = LabelsHandler(tmp_path)
    write(deliveries(label("q1", "p1", "v1", [0.7, 0.1, 0.1, 0.1], 100)))
    assert cut_snapshot(tmp_path) is not None
    write(deliveries(label("q1", "p2", "v1", [0.1, 0.1, 0.1, 0.7], 100)))
    # What SIGKILL leaves mid-write: a shard's temp file and a cut's temp folder.
    (incoming_dir(tmp_path, "labels") / ".123-abc.parquet.tmp").write_bytes(b"half a shard")
    (tmp_path / "snapshots" / ".tmp-000002-abcd1234").mkdir()

    assert remove_crash_leftovers(tmp_path) == 2
    assert remove_crash_leftovers(tmp_path) == 0
    assert pending(tmp_path).labels == 1  # the complete shard stays
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["000001"]
