"""Write side of the label store: incoming shards and snapshot cuts.

Consumption is at-least-once, so a label can arrive twice and a relabeled pair
arrives again under a newer teacher. Both are handled in two steps:

1. every consumed batch is written as one immutable *incoming* shard under
   ``<store>/incoming/{labels,products}/`` (temp file + rename) *before* its offsets are
   committed, so a crash loses nothing and at worst writes a batch twice;
2. :func:`cut_snapshot` folds the previous snapshot and the incoming shards into the
   next snapshot, keeping exactly one row per (query, product, teacher version) (the
   one produced last) and the latest text per product, then deletes the shards it
   folded. Only one cut runs at a time (a file lock), so the service's threshold cuts
   and ``relkd labels snapshot`` can run side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from relevance.v1 import topics_pb2

from contracts.label_snapshots import (
    LABELS_SCHEMA,
    SNAPSHOTS_DIR,
    STORED_PRODUCTS_SCHEMA,
    format_id,
    snapshot_ids,
)
from contracts.products import InvalidProduct, product_row, validate_products
from contracts.schema import (
    NUM_GRADES,
    NUM_MATCH,
    RATIONALE_FIELDS,
    RATIONALE_PROBS_FIELDS,
    SCHEMA_VERSION,
    TEACHER_LABELS,
)
from services.core import bus
from services.label_store.store import (
    LABELS_FILE,
    MANIFEST_FILE,
    PRODUCTS_FILE,
    TEACHER_LABELS_FILE,
    LabelStore,
    Snapshot,
)

INCOMING_DIR = "incoming"
LABELS_KIND = "labels"
PRODUCTS_KIND = "products"
_SCHEMAS = {LABELS_KIND: LABELS_SCHEMA, PRODUCTS_KIND: STORED_PRODUCTS_SCHEMA}
LABEL_KEY = ["query_id", "product_id", "teacher_version"]


def _probs_attribute(field: str) -> str:
    """The Rationale message's distribution of a rationale field: category_match ->
    category_probs."""
    return field.removesuffix("_match") + "_probs"


def label_problem(label: topics_pb2.LabelRecord) -> str:
    """Why `label` cannot be stored, naming the field; empty when it can."""
    if not label.query_id or not label.product_id:
        return "query_id and product_id are required"
    if len(label.grades.probs) != NUM_GRADES:
        return f"grades.probs: expected {NUM_GRADES} probabilities, got {len(label.grades.probs)}"
    total = sum(label.grades.probs)
    if not math.isclose(total, 1.0, abs_tol=1e-3) or min(label.grades.probs) < 0:
        return f"grades.probs: not a distribution (sum {total:.4f})"
    if not label.teacher.version:
        return "teacher.version: must not be empty"
    if label.HasField("rationale"):
        for name in RATIONALE_FIELDS:
            attribute = _probs_attribute(name)
            probs = list(getattr(label.rationale, attribute))
            if not probs:
                continue
            where = f"rationale.{attribute}"
            if len(probs) != NUM_MATCH:
                return f"{where}: expected {NUM_MATCH} probabilities, got {len(probs)}"
            if not math.isclose(sum(probs), 1.0, abs_tol=1e-3) or min(probs) < 0:
                return f"{where}: not a distribution (sum {sum(probs):.4f})"
    return ""


def rationale_columns(label: topics_pb2.LabelRecord) -> dict[str, int | list[float] | None]:
    """The label's rationale as schema.TEACHER_LABELS columns: per field its value and
    distribution; null where the label states none (a missing target, not NOT_STATED)."""
    rationale = label.rationale if label.HasField("rationale") else None
    columns: dict[str, int | list[float] | None] = {}
    for name, probs_name in zip(RATIONALE_FIELDS, RATIONALE_PROBS_FIELDS, strict=True):
        probs = list(getattr(rationale, _probs_attribute(name))) if rationale else []
        columns[name] = int(getattr(rationale, name)) if rationale else None
        columns[probs_name] = probs or None
    return columns


def rationale_rows(table: pa.Table) -> int:
    """Rows of a labels / teacher_labels table whose teacher gave a rationale distribution."""
    if table.num_rows == 0:
        return 0
    present = [pc.is_valid(table.column(name)) for name in RATIONALE_PROBS_FIELDS]
    any_present = present[0]
    for column in present[1:]:
        any_present = pc.or_(any_present, column)
    return int(pc.sum(any_present.cast(pa.int64())).as_py() or 0)


def incoming_dir(store_dir: Path, kind: str) -> Path:
    return Path(store_dir) / INCOMING_DIR / kind


def write_incoming(store_dir: Path, kind: str, rows: list[dict]) -> Path:
    """Writes `rows` as one incoming shard, atomically (a reader never sees half of it)."""
    folder = incoming_dir(store_dir, kind)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMAS[kind]), tmp)
    os.replace(tmp, folder / name)
    return folder / name


def incoming_shards(store_dir: Path, kind: str) -> list[Path]:
    return sorted(incoming_dir(store_dir, kind).glob("*.parquet"))


@dataclass(frozen=True)
class Pending:
    """What has arrived since the last snapshot."""

    labels: int
    products: int
    shards: int
    oldest_age_s: float

    @property
    def rows(self) -> int:
        return self.labels + self.products


def pending(store_dir: Path) -> Pending:
    counts, shards, oldest = {}, 0, None
    for kind in _SCHEMAS:
        paths = incoming_shards(store_dir, kind)
        shards += len(paths)
        counts[kind] = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
        if paths:
            born = int(paths[0].name.split("-", 1)[0]) / 1e9
            oldest = born if oldest is None else min(oldest, born)
    age = max(time.time() - oldest, 0.0) if oldest is not None else 0.0
    return Pending(counts[LABELS_KIND], counts[PRODUCTS_KIND], shards, age)


class LabelsHandler:
    """Consumer handler of ``relevance.labels.v1``: each batch of valid labels -> one shard."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = Path(store_dir)

    def __call__(
        self, deliveries: Sequence[bus.Delivery[topics_pb2.LabelRecord]]
    ) -> list[bus.Rejection]:
        rows, rejected = [], []
        for delivery in deliveries:
            label = delivery.message
            problem = label_problem(label)
            if problem:
                rejected.append(bus.Rejection(delivery, problem))
                continue
            rows.append(
                {
                    "query_id": label.query_id,
                    "query": label.query,
                    "product_id": label.product_id,
                    "grade_probs": list(label.grades.probs),
                    "expected_score": label.expected_score,
                    "teacher_model": label.teacher.name,
                    "teacher_version": label.teacher.version,
                    **rationale_columns(label),
                    "pair_key": label.pair_key,
                    "produced_at_ns": label.meta.produced_at.ToNanoseconds(),
                }
            )
        if rows:
            write_incoming(self.store_dir, LABELS_KIND, rows)
        return rejected


class ProductChangesHandler:
    """Consumer handler of ``relevance.relabel-requests.v1``: the products of each
    ``product_changed`` request -> one shard. Other kinds are candidate generation's
    business; this group only skips them."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = Path(store_dir)

    def __call__(
        self, deliveries: Sequence[bus.Delivery[topics_pb2.RelabelRequest]]
    ) -> list[bus.Rejection]:
        rows, rejected = [], []
        for delivery in deliveries:
            request = delivery.message
            if request.WhichOneof("kind") != "product_changed":
                continue
            produced_at = request.meta.produced_at.ToNanoseconds()
            try:
                validate_products(request.product_changed.products, "product_changed.products")
            except InvalidProduct as exc:
                rejected.append(bus.Rejection(delivery, str(exc)))
                continue
            rows.extend(
                {**product_row(p), "produced_at_ns": produced_at}
                for p in request.product_changed.products
            )
        if rows:
            write_incoming(self.store_dir, PRODUCTS_KIND, rows)
        return rejected


def remove_crash_leftovers(store_dir: Path) -> int:
    """Deletes the temp files of shard writes and cuts that a killed process left
    behind; returns how many. A store has one writer, so this runs at its start, before
    the consumers; a cut's temp folder goes under the cut lock, so a `relkd labels
    snapshot` in progress keeps its own."""
    removed = 0
    for kind in _SCHEMAS:
        for leftover in incoming_dir(store_dir, kind).glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
            removed += 1
    with _cut_lock(store_dir):
        for leftover in (store_dir / SNAPSHOTS_DIR).glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed += 1
    return removed


@contextlib.contextmanager
def _cut_lock(store_dir: Path) -> Iterator[None]:
    store_dir.mkdir(parents=True, exist_ok=True)
    with open(store_dir / ".cut.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _newest_per(table: pa.Table, keys: list[str]) -> pa.Table:
    """One row per `keys`: the one with the largest produced_at_ns (ties: the later row)."""
    if table.num_rows == 0:
        return table
    table = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    order = pc.sort_indices(
        table,
        [(k, "ascending") for k in keys]
        + [("produced_at_ns", "descending"), ("_row", "descending")],
    )
    table = table.take(order)
    columns = [table.column(k).to_pylist() for k in keys]
    first = [
        i for i in range(table.num_rows) if i == 0 or any(col[i] != col[i - 1] for col in columns)
    ]
    return table.take(pa.array(first, pa.int64())).drop_columns(["_row"])


def _read_all(paths: list[Path], schema: pa.Schema) -> pa.Table:
    tables = [pq.read_table(p, schema=schema) for p in paths]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _write_readonly(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")
    path.chmod(0o444)


def cut_snapshot(store_dir: Path | str, reason: str = "on demand") -> Snapshot | None:
    """Folds the incoming shards into a new snapshot and returns it; None when nothing
    arrived since the last snapshot (the first cut always makes one, maybe empty)."""
    store_dir = Path(store_dir)
    with _cut_lock(store_dir):
        ids = snapshot_ids(store_dir)
        label_shards = incoming_shards(store_dir, LABELS_KIND)
        product_shards = incoming_shards(store_dir, PRODUCTS_KIND)
        if ids and not label_shards and not product_shards:
            return None
        previous = LabelStore(store_dir).open(ids[-1]) if ids else None

        old_labels = previous.labels() if previous else LABELS_SCHEMA.empty_table()
        new_labels = _read_all(label_shards, LABELS_SCHEMA)
        labels = _newest_per(pa.concat_tables([old_labels, new_labels]), LABEL_KEY)
        teacher_labels = _newest_per(labels, ["query_id", "product_id"]).select(
            TEACHER_LABELS.names
        )
        old_products = (
            pq.read_table(previous.path / PRODUCTS_FILE, schema=STORED_PRODUCTS_SCHEMA)
            if previous
            else STORED_PRODUCTS_SCHEMA.empty_table()
        )
        new_products = _read_all(product_shards, STORED_PRODUCTS_SCHEMA)
        products = _newest_per(pa.concat_tables([old_products, new_products]), ["product_id"])

        snapshot_id = format_id(int(ids[-1]) + 1 if ids else 1)
        counts = {
            "labels": labels.num_rows,
            "teacher_labels": teacher_labels.num_rows,
            # Of those, the pairs whose newest label carries rationale distributions (the
            # students' chain-of-thought targets).
            "teacher_labels_with_rationale": rationale_rows(teacher_labels),
            "products": products.num_rows,
        }
        created_at = datetime.now(UTC)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "source": "label-store",
            "seed": None,
            "counts": {"teacher_labels": teacher_labels.num_rows, "products": products.num_rows},
            "extra": {
                "snapshot": {
                    "id": snapshot_id,
                    "parent": previous.id if previous else None,
                    "created_at": created_at.isoformat(timespec="seconds"),
                    "reason": reason,
                    "counts": counts,
                    "folded": {
                        "label_rows": new_labels.num_rows,
                        "product_rows": new_products.num_rows,
                        "shards": len(label_shards) + len(product_shards),
                    },
                }
            },
        }
        root = store_dir / SNAPSHOTS_DIR
        tmp = root / f".tmp-{snapshot_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            _write_readonly(labels.cast(LABELS_SCHEMA), tmp / LABELS_FILE)
            _write_readonly(teacher_labels.cast(TEACHER_LABELS), tmp / TEACHER_LABELS_FILE)
            _write_readonly(products.cast(STORED_PRODUCTS_SCHEMA), tmp / PRODUCTS_FILE)
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            (tmp / MANIFEST_FILE).chmod(0o444)
            os.replace(tmp, root / snapshot_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # Only now are the folded shards safe to drop; a crash before this line makes
        # the next cut fold them again, which the per-key dedup makes harmless.
        for path in (*label_shards, *product_shards):
            path.unlink(missing_ok=True)
        return LabelStore(store_dir).open(snapshot_id)


def stored_pairs(store_dir: Path | str) -> set[tuple[str, str]]:
    """(query_id, product_id) pairs with a stored label: newest snapshot plus pending shards."""
    store_dir = Path(store_dir)
    columns = ["query_id", "product_id"]
    tables = []
    ids = snapshot_ids(store_dir)
    if ids:
        tables.append(LabelStore(store_dir).open(ids[-1]).labels(columns))
    for path in incoming_shards(store_dir, LABELS_KIND):
        # A shard folded by a concurrent cut is in the snapshot read next time round.
        with contextlib.suppress(FileNotFoundError):
            tables.append(pq.read_table(path, columns=columns))
    pairs: set[tuple[str, str]] = set()
    for table in tables:
        pairs.update(zip(*(table.column(c).to_pylist() for c in columns), strict=True))
    return pairs


def wait_until_stored(
    store_dir: Path | str, expected: Mapping[str, int], timeout_s: float, poll_s: float = 1.0
) -> int:
    """Blocks until each query of `expected` has that many labeled pairs stored; returns
    the stored pairs of those queries.

    Raises TimeoutError with the counts when `timeout_s` pass first: a caller that goes
    on with part of its labels must say so, not find out from a smaller dataset.
    """
    deadline, total = time.monotonic() + timeout_s, sum(expected.values())
    while True:
        per_query = Counter(q for q, _ in stored_pairs(store_dir) if q in expected)
        stored = sum(min(per_query[q], n) for q, n in expected.items())
        if stored >= total:
            return sum(per_query.values())
        if time.monotonic() >= deadline:
            short = sum(1 for q, n in expected.items() if per_query[q] < n)
            raise TimeoutError(
                f"{stored} of {total} published pairs were labeled and stored in {store_dir} "
                f"after {timeout_s:.0f}s ({short} of {len(expected)} queries short)"
            )
        time.sleep(poll_s)
