"""Read API of the label store: snapshots, the labels in them, and product text.

The label store service (``services.label_store.service``) consumes
``relevance.labels.v1`` and the ``product_changed`` relabel requests and cuts immutable
snapshots (layout in :mod:`contracts.label_snapshots`). Everything that reads labels
goes through this module::

    from services.label_store.store import LabelStore

    store = LabelStore(LabelStoreSettings().dir)      # RELKD_LABEL_STORE_DIR
    snap = store.open()                               # newest snapshot; store.open("000003")
    for label in snap.iter_labels():                  # one per (pair, teacher version)
        label.query_id, label.product_id, label.teacher_version, label.expected_score
    snap.known_queries()                              # {query_id: query text}
    snap.stale_pairs("teacher-v7")                    # pairs with no label by that version
    snap.product("p-123")                             # latest text of a product, or None

A snapshot never changes once cut, so a reader holding one sees a fixed set of rows
while labels keep arriving; :meth:`LabelStore.open` with no id picks the newest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.label_snapshots import (
    LABELS_SCHEMA,
    LATEST,
    SnapshotNotFound,
    snapshot_dir,
    snapshot_ids,
)
from contracts.schema import PRODUCTS, RATIONALE_PROBS_FIELDS, TEACHER_LABELS

__all__ = ["LATEST", "Label", "LabelStore", "Snapshot", "SnapshotNotFound"]

LABELS_FILE = "labels.parquet"
TEACHER_LABELS_FILE = "teacher_labels.parquet"
PRODUCTS_FILE = "products.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True, slots=True)
class Label:
    """One teacher label of one (query, product) pair, as stored."""

    query_id: str
    query: str
    product_id: str
    grade_probs: tuple[float, ...]
    expected_score: float
    teacher_model: str
    teacher_version: str
    # When the teacher-labeling service produced it (EventMeta.produced_at, ns since epoch).
    produced_at_ns: int
    # The teacher's rationale per field (Match value, and p(value) in Match order);
    # None where it stated none.
    category_match: int | None
    brand_match: int | None
    attribute_match: int | None
    category_match_probs: tuple[float, ...] | None
    brand_match_probs: tuple[float, ...] | None
    attribute_match_probs: tuple[float, ...] | None


class Snapshot:
    """One immutable snapshot of the label store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest: dict[str, Any] = json.loads((path / MANIFEST_FILE).read_text())
        info = self.manifest.get("extra", {}).get("snapshot", {})
        self.id: str = info.get("id", path.name)
        self.created_at: str = info.get("created_at", "")
        self.parent: str | None = info.get("parent")

    def __repr__(self) -> str:
        return f"Snapshot({self.id!r}, {self.path})"

    @property
    def counts(self) -> dict[str, int]:
        """Rows per table: labels (pair x teacher version), teacher_labels (pairs), products."""
        return dict(self.manifest.get("extra", {}).get("snapshot", {}).get("counts", {}))

    def labels(self, columns: list[str] | None = None) -> pa.Table:
        """Every stored label: exactly one row per (query, product, teacher version)."""
        return pq.read_table(self.path / LABELS_FILE, columns=columns, schema=LABELS_SCHEMA)

    def iter_labels(self, batch_size: int = 10_000) -> Iterator[Label]:
        """Every stored label as :class:`Label`, streamed in batches of `batch_size` rows."""
        for batch in pq.ParquetFile(self.path / LABELS_FILE).iter_batches(batch_size):
            for row in batch.to_pylist():
                # .get: a snapshot cut before the distributions existed has no such column.
                probs = {
                    name: None if row.get(name) is None else tuple(row[name])
                    for name in RATIONALE_PROBS_FIELDS
                }
                yield Label(
                    query_id=row["query_id"],
                    query=row["query"],
                    product_id=row["product_id"],
                    grade_probs=tuple(row["grade_probs"]),
                    expected_score=row["expected_score"],
                    teacher_model=row["teacher_model"],
                    teacher_version=row["teacher_version"],
                    produced_at_ns=row["produced_at_ns"],
                    category_match=row["category_match"],
                    brand_match=row["brand_match"],
                    attribute_match=row["attribute_match"],
                    **probs,
                )

    def teacher_labels(self) -> pa.Table:
        """The training view: the newest teacher's label of each pair (schema.TEACHER_LABELS)."""
        return pq.read_table(self.path / TEACHER_LABELS_FILE, schema=TEACHER_LABELS)

    def teacher_versions(self) -> dict[str, int]:
        """Labels per teacher version."""
        counts = pc.value_counts(self.labels(["teacher_version"]).column("teacher_version"))
        return {c["values"].as_py(): c["counts"].as_py() for c in counts}

    def known_queries(self) -> dict[str, str]:
        """Every query with at least one label: ``{query_id: query text}``."""
        table = self.teacher_labels().select(["query_id", "query"])
        return dict(
            zip(
                table.column("query_id").to_pylist(), table.column("query").to_pylist(), strict=True
            )
        )

    def labeled_pairs(self) -> set[tuple[str, str]]:
        """Every (query_id, product_id) pair with at least one label."""
        table = self.teacher_labels().select(["query_id", "product_id"])
        return set(
            zip(
                table.column("query_id").to_pylist(),
                table.column("product_id").to_pylist(),
                strict=True,
            )
        )

    def stale_pairs(self, teacher_version: str) -> pa.Table:
        """Pairs that have no label by `teacher_version`, with their newest label
        (schema.TEACHER_LABELS rows): what a ``teacher_changed`` request re-queues."""
        newest = self.teacher_labels()
        labels = self.labels(["query_id", "product_id", "teacher_version"])
        current = labels.filter(pc.field("teacher_version") == teacher_version)
        done = set(
            zip(
                current.column("query_id").to_pylist(),
                current.column("product_id").to_pylist(),
                strict=True,
            )
        )
        if not done:
            return newest
        keep = [
            (q, p) not in done
            for q, p in zip(
                newest.column("query_id").to_pylist(),
                newest.column("product_id").to_pylist(),
                strict=True,
            )
        ]
        return newest.filter(pa.array(keep, pa.bool_()))

    def products(self) -> pa.Table:
        """Latest text of every product that reached the store (schema.PRODUCTS)."""
        return pq.read_table(self.path / PRODUCTS_FILE, columns=PRODUCTS.names)

    @cached_property
    def _products_by_id(self) -> dict[str, dict[str, Any]]:
        return {row["product_id"]: row for row in self.products().to_pylist()}

    def product(self, product_id: str) -> dict[str, Any] | None:
        """The latest products-table row of `product_id`, or None if it never arrived."""
        return self._products_by_id.get(product_id)

    def product_rows(self, product_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Latest rows of those of `product_ids` the store has."""
        rows = self._products_by_id
        return {pid: rows[pid] for pid in product_ids if pid in rows}


class LabelStore:
    """A label store directory (``RELKD_LABEL_STORE_DIR``): its snapshots, read-only."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def snapshot_ids(self) -> list[str]:
        """Ids of the complete snapshots, oldest first."""
        return snapshot_ids(self.root)

    def latest_id(self) -> str | None:
        ids = self.snapshot_ids()
        return ids[-1] if ids else None

    def open(self, snapshot_id: str | None = None) -> Snapshot:
        """Snapshot `snapshot_id` (``None`` or ``"latest"``: the newest); raises
        :class:`SnapshotNotFound` naming the store and its snapshots."""
        return Snapshot(snapshot_dir(self.root, snapshot_id))
