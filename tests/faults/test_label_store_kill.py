"""The label store SIGKILLed mid-flush: its batch was written to the store but the
commit of its offsets was not acknowledged. After a restart the batch is delivered
again; the store holds each label exactly once, and every label."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
from fault_tools import committed, fault_settings, paused, run_id, wait_for
from relevance.v1 import common_pb2, topics_pb2
from service_processes import start_service, stop_service

from contracts.topics import LABELS, pair_key
from services.core import bus
from services.core.broker import EmbeddedBroker, free_port
from services.label_store.writer import LABELS_KIND, cut_snapshot, incoming_shards


def _label(query_id: str, product_id: str) -> topics_pb2.LabelRecord:
    record = topics_pb2.LabelRecord(
        pair_key=pair_key(query_id, product_id),
        query_id=query_id,
        query=f"query {query_id}",
        product_id=product_id,
        grades=common_pb2.GradeDistribution(probs=[0.1, 0.2, 0.3, 0.4]),
        expected_score=2.0,
        teacher=common_pb2.ModelRef(name="teacher", version="v1"),
    )
    record.meta.produced_at.FromSeconds(100)
    return record


def _shard_rows(store: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in incoming_shards(store, LABELS_KIND))


def test_label_store_killed_mid_flush_stores_every_label_once(
    tansu: EmbeddedBroker, tmp_path: Path
) -> None:
    run, store, n = run_id(), tmp_path / "store", 80
    pairs = [(f"{run}-q{i // 4:02d}", f"p{i % 4}") for i in range(n)]
    settings = fault_settings(tansu.bootstrap)
    publisher = bus.Publisher(settings)
    # 80 labels and 10 of them again, as a teacher re-publishes after its own crash.
    for qid, pid in [*pairs, *pairs[:10]]:
        publisher.publish(LABELS, pair_key(qid, pid), _label(qid, pid))
    publisher.flush()
    publisher.close()
    group = f"label-store-{run}"
    env = {
        "RELKD_KAFKA_BOOTSTRAP": tansu.bootstrap,
        "RELKD_KAFKA_REQUEST_TIMEOUT_MS": "1000",
        "RELKD_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RELKD_KAFKA_MAX_POLL_INTERVAL_MS": "10000",
        # One label per batch: the store is still writing batches when the broker pauses.
        "RELKD_KAFKA_MAX_POLL_RECORDS": "1",
        # The replacement takes the partitions over at once instead of after a timeout.
        "RELKD_KAFKA_GROUP_INSTANCE_ID": f"store-{run}",
        "RELKD_LABEL_STORE_DIR": str(store),
        "RELKD_LABEL_STORE_GROUP": group,
        "RELKD_LABEL_STORE_SNAPSHOT_MIN_ROWS": str(10**9),  # cut by the test only
        "RELKD_LABEL_STORE_SNAPSHOT_MAX_AGE_S": str(10**9),
    }
    service = start_service("label-store", free_port(), env)
    try:
        wait_for(lambda: len(incoming_shards(store, LABELS_KIND)) >= 3, 60, "the first batches")
        # With the broker paused a written batch cannot commit: the kill lands between
        # the store's write and the commit, exactly where a redelivery is due.
        with paused(tansu.pid):
            shards = len(incoming_shards(store, LABELS_KIND))
            wait_for(
                lambda: len(incoming_shards(store, LABELS_KIND)) > shards, 30, "a batch written"
            )
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
    finally:
        if service.poll() is None:
            stop_service(service)
    done_before = committed(tansu.bootstrap, group, LABELS)
    assert done_before < n + 10  # the batch in flight was not committed

    service = start_service("label-store", free_port(), env)
    try:
        wait_for(
            lambda: committed(tansu.bootstrap, group, LABELS) >= n + 10, 60, "every label committed"
        )
    finally:
        assert stop_service(service) == 0
    written = _shard_rows(store)
    assert written > n  # duplicates did reach the store: from the topic and the redelivery

    labels = cut_snapshot(store).labels().to_pylist()
    stored = [(row["query_id"], row["product_id"], row["teacher_version"]) for row in labels]
    assert len(stored) == len(set(stored)) == n  # 80 labels in, 80 rows out, none twice
    assert {(q, p) for q, p, _ in stored} == set(pairs)
