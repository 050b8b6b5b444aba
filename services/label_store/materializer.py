"""The dataset materializer: ``relevance.labels.v1`` -> the ``teacher_labels`` table.

Consumption is at-least-once, so the same label can arrive twice, and a relabeled
pair arrives again with a newer teacher. Both are handled in two steps:

1. every consumed batch is written as one immutable shard under
   ``<dataset>/label_stream/`` (atomically: temp file + rename) *before* its offsets
   are committed, so a crash loses nothing and at worst writes a batch twice;
2. :func:`compact` folds the shards into ``teacher_labels`` keeping one row per
   (query, product) pair: the one produced last, i.e. by the newest teacher.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from relevance.v1 import topics_pb2

from contracts.schema import NUM_GRADES, TEACHER_LABELS
from contracts.topics import LABELS
from services.core import bus
from services.core.settings import Settings
from training.data import storage

STREAM_DIR = "label_stream"
# Stream shards carry the teacher_labels columns plus what dedup needs.
STREAM_SCHEMA = TEACHER_LABELS.append(pa.field("pair_key", pa.string())).append(
    pa.field("produced_at_ns", pa.int64())
)


def _problem(label: topics_pb2.LabelRecord) -> str:
    if not label.query_id or not label.product_id:
        return "query_id and product_id are required"
    if len(label.grades.probs) != NUM_GRADES:
        return f"grades.probs: expected {NUM_GRADES} probabilities, got {len(label.grades.probs)}"
    total = sum(label.grades.probs)
    if not math.isclose(total, 1.0, abs_tol=1e-3) or min(label.grades.probs) < 0:
        return f"grades.probs: not a distribution (sum {total:.4f})"
    if not label.teacher.version:
        return "teacher.version: must not be empty"
    return ""


class LabelShardWriter:
    """Consumer handler: writes each batch of valid labels as one stream shard."""

    def __init__(self, dataset_dir: Path) -> None:
        self.stream_dir = Path(dataset_dir) / STREAM_DIR
        self.stream_dir.mkdir(parents=True, exist_ok=True)

    def __call__(
        self, deliveries: Sequence[bus.Delivery[topics_pb2.LabelRecord]]
    ) -> list[bus.Rejection]:
        rows, rejected = [], []
        for delivery in deliveries:
            label = delivery.message
            problem = _problem(label)
            if problem:
                rejected.append(bus.Rejection(delivery, problem))
                continue
            rationale = label.rationale if label.HasField("rationale") else None
            rows.append(
                {
                    "query_id": label.query_id,
                    "query": label.query,
                    "product_id": label.product_id,
                    "grade_probs": list(label.grades.probs),
                    "expected_score": label.expected_score,
                    "teacher_model": label.teacher.name,
                    "teacher_version": label.teacher.version,
                    "category_match": rationale.category_match if rationale else 0,
                    "brand_match": rationale.brand_match if rationale else 0,
                    "attribute_match": rationale.attribute_match if rationale else 0,
                    "pair_key": label.pair_key,
                    "produced_at_ns": label.meta.produced_at.ToNanoseconds(),
                }
            )
        if rows:
            self._write(pa.Table.from_pylist(rows, schema=STREAM_SCHEMA))
        return rejected

    def _write(self, table: pa.Table) -> None:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.stream_dir / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.stream_dir / name)


def stream_rows(dataset_dir: Path) -> int:
    stream = Path(dataset_dir) / STREAM_DIR
    return sum(pq.ParquetFile(p).metadata.num_rows for p in stream.glob("*.parquet"))


def compact(dataset_dir: Path) -> int:
    """Rewrites ``teacher_labels`` from the stream: one row per pair, newest wins. Returns rows."""
    stream = Path(dataset_dir) / STREAM_DIR
    shards = sorted(stream.glob("*.parquet"))
    if not shards:
        storage.write_table(dataset_dir, "teacher_labels", TEACHER_LABELS.empty_table())
        return 0
    table = pa.concat_tables(pq.read_table(p, schema=STREAM_SCHEMA) for p in shards)
    # Sort newest first, then keep each pair's first row.
    order = pc.sort_indices(table, [("pair_key", "ascending"), ("produced_at_ns", "descending")])
    table = table.take(order)
    keys = table.column("pair_key").to_numpy(zero_copy_only=False)
    first = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
    newest = table.take(pa.array(first)).select(TEACHER_LABELS.names)
    storage.write_table(dataset_dir, "teacher_labels", newest)
    return newest.num_rows


def materialize(
    settings: Settings,
    dataset_dir: Path,
    group: str = "dataset-materializer",
    idle_s: float = 10.0,
    timeout_s: float = 3600.0,
    expected: int | None = None,
) -> int:
    """Consumes labels until `expected` stream rows exist or `idle_s` pass quietly; compacts."""
    writer = LabelShardWriter(dataset_dir)
    publisher = bus.Publisher(settings)
    loop = bus.ConsumerLoop(settings, LABELS, group, writer, publisher)
    consumer = bus.BackgroundConsumer(loop, publisher, "materializer")
    consumer.start()
    seen, last_change, started = -1, time.monotonic(), time.monotonic()
    try:
        while time.monotonic() - started < timeout_s:
            if consumer.error is not None:
                raise RuntimeError("the label consumer died") from consumer.error
            handled = loop.processed + loop.dead_lettered
            if handled != seen:
                seen, last_change = handled, time.monotonic()
            if expected is not None and stream_rows(dataset_dir) >= expected:
                break
            if seen > 0 and time.monotonic() - last_change > idle_s:
                break
            time.sleep(0.2)
    finally:
        consumer.stop()
    return compact(dataset_dir)
