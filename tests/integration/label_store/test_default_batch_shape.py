"""The demo's default batch shape end to end (issue 18's stall): 400 candidate batches of
12 published at once, labeled by a tiny teacher through the labeling workers' consumer,
all 4,800 pairs stored by the label store, each with the teacher's rationale distributions.

The stall came from the labeling consumer taking every waiting batch into one step
(up to 500 batches, 6,000 pairs) and publishing nothing until the step ended, while the
old materializer gave up after an idle window. The consumer now takes
``teacher_poll_batches`` per step, and the demo waits for the counts, not for quiet.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pyarrow.compute as pc
import pytest
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import CANDIDATES
from services.core import bus
from services.core.settings import Settings
from services.label_store.service import LabelStoreWorkers
from services.label_store.settings import LabelStoreSettings
from services.label_store.writer import cut_snapshot, wait_until_stored
from services.teacher_labeling.service import TeacherLabelingSettings, labeling_loop
from training.teacher.labeler import TeacherLabeler

pytestmark = pytest.mark.integration

BATCHES, PER_BATCH = 400, 12


class CountingLabeler:
    """The tiny teacher, recording how many pairs each labeling step hands it."""

    def __init__(self, teacher: TeacherLabeler) -> None:
        self.teacher, self.name, self.version = teacher, teacher.name, teacher.version
        self.steps: list[int] = []
        self.with_rationale = 0

    def label(self, pairs, explain: bool = False):
        self.steps.append(len(pairs))
        labels = self.teacher.label(pairs, explain)
        self.with_rationale += sum(label.rationale is not None for label in labels)
        return labels


def test_every_pair_of_the_default_batch_shape_is_labeled_and_stored(
    settings: Settings, llama_teacher: Path, tmp_path: Path
) -> None:
    run, store = uuid.uuid4().hex[:8], tmp_path / "store"
    labeler = CountingLabeler(TeacherLabeler.from_checkpoint(llama_teacher))
    own = TeacherLabelingSettings(teacher_group=f"labeling-{run}")
    publisher = bus.Publisher(settings)
    loop = labeling_loop(settings, own, labeler, publisher)
    worker = threading.Thread(target=loop.run, daemon=True)
    store_workers = LabelStoreWorkers(
        settings, LabelStoreSettings(dir=store, group=f"store-{run}", snapshot_min_rows=10**9)
    )
    worker.start()
    store_workers.start()
    try:
        for b in range(BATCHES):
            batch = topics_pb2.CandidateBatch(
                query_id=f"{run}-q{b}",
                query=f"acme sofa {b}",
                products=[
                    common_pb2.Product(product_id=f"p{i}", title=f"acme red sofa {i}")
                    for i in range(PER_BATCH)
                ],
            )
            publisher.publish(CANDIDATES, batch.query_id, batch)
        publisher.flush()
        expected = {f"{run}-q{b}": PER_BATCH for b in range(BATCHES)}
        stored = wait_until_stored(store, expected, timeout_s=120, poll_s=0.5)
    finally:
        loop.stop()
        worker.join()
        store_workers.stop()
        publisher.close()
    assert stored == BATCHES * PER_BATCH
    # No labeling step holds more than the configured number of batches.
    assert max(labeler.steps) <= own.teacher_poll_batches * PER_BATCH
    snapshot = cut_snapshot(store)
    assert snapshot is not None
    mine = snapshot.labels(["query_id"]).column(0).to_pylist()
    assert sum(q.startswith(run) for q in mine) == BATCHES * PER_BATCH
    # The classifier teacher's rationale heads give every label its chain-of-thought
    # targets: every label made carries one (a batch redelivered after a rebalance is
    # labeled again), and every stored row of this run has one. (The snapshot's own
    # counts cover the whole topic, which other tests on the same broker also write.)
    assert labeler.with_rationale == sum(labeler.steps) >= BATCHES * PER_BATCH
    teacher_labels = snapshot.teacher_labels()
    this_run = pc.starts_with(teacher_labels.column("query_id"), run)
    stored_probs = teacher_labels.filter(this_run).column("attribute_match_probs")
    assert len(stored_probs) == BATCHES * PER_BATCH
    assert stored_probs.null_count == 0
