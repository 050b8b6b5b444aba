from __future__ import annotations

import numpy as np
import pytest

from training.student.config import StudentTrainConfig
from training.student.examples import HUMAN, TEACHER, QueryPairSampler, load_training_set


def test_training_set_mixes_sources_and_excludes_eval_queries(tiny_config: StudentTrainConfig):
    data = load_training_set(tiny_config)
    sources = {e.source for e in data.examples}
    assert sources == {HUMAN, TEACHER}
    # q8 is a dev query the teacher labeled; q8..q13 are dev/test.
    assert {e.query_id for e in data.examples}.isdisjoint({f"q{i}" for i in range(8, 14)})
    assert data.human_queries == 8 and data.teacher_queries == 4
    for e in data.examples:
        assert e.grade_probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert e.score == pytest.approx(float(e.grade_probs @ np.arange(4)), abs=1e-4)


def test_human_only_and_fractions(tiny_config: StudentTrainConfig):
    human_only = load_training_set(tiny_config.model_copy(update={"use_teacher_labels": False}))
    assert {e.source for e in human_only.examples} == {HUMAN}
    half = load_training_set(
        tiny_config.model_copy(update={"use_teacher_labels": False, "human_fraction": 0.5})
    )
    assert half.human_queries == 4
    assert {e.query_id for e in half.examples} < {e.query_id for e in human_only.examples}


def test_augmented_sizes_are_nested(tiny_config: StudentTrainConfig):
    def teacher_queries(n: int) -> set[str]:
        data = load_training_set(tiny_config.model_copy(update={"augmented_queries": n}))
        return {e.query_id for e in data.examples if e.source == TEACHER}

    small, large = teacher_queries(1), teacher_queries(3)
    assert len(small) == 1 and len(large) == 3 and small < large


def test_sampler_pairs_share_a_query_and_have_real_margins(tiny_config: StudentTrainConfig):
    examples = load_training_set(tiny_config).examples
    sampler = QueryPairSampler(
        examples, queries_per_batch=3, pairs_per_query=5, min_margin=0.5, seed=1
    )
    for number in range(2 * sampler.batches_per_pass):
        batch = sampler.batch(number)
        assert batch.shape[1] == 2 and len(batch) <= 15
        for i, j in batch:
            assert examples[i].query_id == examples[j].query_id
            assert examples[i].score - examples[j].score >= 0.5
    # Deterministic by (seed, batch number): what resume relies on.
    again = QueryPairSampler(
        examples, queries_per_batch=3, pairs_per_query=5, min_margin=0.5, seed=1
    )
    assert np.array_equal(sampler.batch(7), again.batch(7))


def test_sampler_rejects_data_without_margins(tiny_config: StudentTrainConfig):
    examples = load_training_set(tiny_config).examples
    with pytest.raises(ValueError, match="min_margin"):
        QueryPairSampler(examples, queries_per_batch=2, pairs_per_query=2, min_margin=9, seed=0)


def test_missing_teacher_table_is_named(tiny_config: StudentTrainConfig, tmp_path):
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(tiny_config.dataset_dir, copy)
    (copy / "teacher_labels.parquet").unlink()
    with pytest.raises(ValueError, match="teacher_labels"):
        load_training_set(tiny_config.model_copy(update={"dataset_dir": copy}))


def test_teacher_labels_come_from_a_pinned_label_store_snapshot(
    tiny_config: StudentTrainConfig, tmp_path
):
    """A new product and an edited one train on the store's text; a named snapshot
    keeps its rows when a newer snapshot adds labels."""
    from relevance.v1 import common_pb2, topics_pb2

    from contracts.topics import pair_key
    from services.core import bus
    from services.label_store.writer import LabelsHandler, ProductChangesHandler, cut_snapshot
    from training.data.storage import read_table

    dataset = tiny_config.dataset_dir
    # A query the dataset has never seen (e.g. from the search log): no human labels.
    train_query = {"query_id": "q-from-log", "query": "acme sofa"}
    edited = read_table(dataset, "products").column("product_id")[0].as_py()
    store = tmp_path / "store"

    def label(pid: str, probs: list[float]) -> bus.Delivery:
        record = topics_pb2.LabelRecord(
            pair_key=pair_key(train_query["query_id"], pid),
            query_id=train_query["query_id"],
            query=train_query["query"],
            product_id=pid,
            grades=common_pb2.GradeDistribution(probs=probs),
            expected_score=sum(g * p for g, p in enumerate(probs)),
            teacher=common_pb2.ModelRef(name="teacher", version="v1"),
        )
        return bus.Delivery(None, record)

    change = topics_pb2.RelabelRequest(
        product_changed=topics_pb2.ProductChanged(
            products=[
                common_pb2.Product(product_id="brand-new", title="brand new listing"),
                common_pb2.Product(product_id=edited, title="edited listing title"),
            ]
        )
    )
    ProductChangesHandler(store)([bus.Delivery(None, change)])
    LabelsHandler(store)([label("brand-new", [0, 0, 0, 1]), label(edited, [1, 0, 0, 0])])
    first = cut_snapshot(store)
    LabelsHandler(store)([label("brand-new-2", [0, 0, 1, 0])])
    ProductChangesHandler(store)(
        [
            bus.Delivery(
                None,
                topics_pb2.RelabelRequest(
                    product_changed=topics_pb2.ProductChanged(
                        products=[common_pb2.Product(product_id="brand-new-2", title="second")]
                    )
                ),
            )
        ]
    )
    cut_snapshot(store)

    pinned = tiny_config.model_copy(update={"label_store": store, "snapshot": first.id})
    data = load_training_set(pinned)
    teacher = {e.product_id: e for e in data.examples if e.source == TEACHER}
    assert data.teacher_snapshot == first.id
    assert set(teacher) == {"brand-new", edited}
    assert teacher["brand-new"].product_text == "brand new listing"
    assert teacher[edited].product_text == "edited listing title"

    latest = load_training_set(tiny_config.model_copy(update={"label_store": store}))
    assert latest.teacher_snapshot == "000002"
    assert {e.product_id for e in latest.examples if e.source == TEACHER} == {
        "brand-new",
        edited,
        "brand-new-2",
    }
    with pytest.raises(LookupError, match="snapshot: '9'"):
        load_training_set(pinned.model_copy(update={"snapshot": "9"}))


def test_rationale_targets_are_one_hot_judgments_soft_labels_or_missing(
    tiny_config: StudentTrainConfig,
):
    from training.data.storage import read_table

    data = load_training_set(tiny_config)
    labels = [
        row
        for row in read_table(tiny_config.dataset_dir, "teacher_labels").to_pylist()
        if row["query_id"] != "q8"  # the dev query's label is dropped
    ]
    stated = {(r["query_id"], r["product_id"]): r for r in labels if r["brand_match_probs"]}
    for e in data.examples:
        if e.source == HUMAN:
            # The judgments' fields are all stated: one-hot targets.
            assert e.rationale_known.all() and (e.rationale.max(-1) == 1.0).all()
        elif (e.query_id, e.product_id) in stated:
            row = stated[(e.query_id, e.product_id)]
            assert e.rationale_known.all()
            assert e.rationale[1] == pytest.approx(row["brand_match_probs"])
        else:
            # A teacher label without distributions: missing, not a NOT_STATED target.
            assert not e.rationale_known.any() and not e.rationale.any()
    # Counts: the examples with targets are the labels that carry them.
    assert data.rationale_examples(TEACHER) == len(stated) > 0
    assert data.rationale_examples(HUMAN) == sum(e.source == HUMAN for e in data.examples)
    assert sum(e.source == TEACHER for e in data.examples) == len(labels) > len(stated)
