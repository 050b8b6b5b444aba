"""Where the label store keeps its snapshots, as both the store and the trainers read it.

A label store directory holds immutable snapshots, one directory each::

    <store>/snapshots/<id>/manifest.json        a dataset manifest (schema_version, counts)
                                                plus ``extra.snapshot`` (id, parent, created_at)
    <store>/snapshots/<id>/teacher_labels.parquet  newest teacher per (query, product) pair:
                                                the training view (schema.TEACHER_LABELS)
    <store>/snapshots/<id>/labels.parquet       every (query, product, teacher_version) row,
                                                exactly one each (LABELS_SCHEMA)
    <store>/snapshots/<id>/products.parquet     latest text of every product that reached the
                                                store (STORED_PRODUCTS_SCHEMA)

Ids are zero-padded sequence numbers, so the newest snapshot sorts last. A snapshot
directory appears by an atomic rename once complete and is never written again, so a
training run that names one reads the same rows however many labels arrive later.

The service side (``services.label_store``) writes them; ``services.label_store.store``
is the read API; training resolves a snapshot here and reads it as a dataset directory.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from contracts.schema import PRODUCTS, TEACHER_LABELS

SNAPSHOTS_DIR = "snapshots"
LATEST = "latest"
ID_DIGITS = 6

# Every (pair, teacher version) row: the training columns plus what ordering needs.
LABELS_SCHEMA = TEACHER_LABELS.append(pa.field("pair_key", pa.string(), nullable=False)).append(
    pa.field("produced_at_ns", pa.int64(), nullable=False)
)

# Stored products: the products table plus when the change was published (newest wins).
STORED_PRODUCTS_SCHEMA = PRODUCTS.append(pa.field("produced_at_ns", pa.int64(), nullable=False))


class SnapshotNotFound(LookupError):
    """The store has no snapshot with the requested id (or none at all)."""


def format_id(sequence: int) -> str:
    return f"{sequence:0{ID_DIGITS}d}"


def snapshot_ids(store_dir: Path | str) -> list[str]:
    """Ids of the complete snapshots of the store at `store_dir`, oldest first."""
    root = Path(store_dir) / SNAPSHOTS_DIR
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "manifest.json").is_file()
    )


def snapshot_dir(store_dir: Path | str, snapshot_id: str | None = None) -> Path:
    """The directory of snapshot `snapshot_id` (``None`` or ``"latest"``: the newest one)."""
    ids = snapshot_ids(store_dir)
    if snapshot_id in (None, LATEST):
        if not ids:
            raise SnapshotNotFound(
                f"label store {store_dir} has no snapshot yet; cut one with `relkd labels snapshot`"
            )
        return Path(store_dir) / SNAPSHOTS_DIR / ids[-1]
    wanted = format_id(int(snapshot_id)) if snapshot_id.isdigit() else snapshot_id
    if wanted not in ids:
        raise SnapshotNotFound(
            f"snapshot: {snapshot_id!r} is not in label store {store_dir} "
            f"(snapshots: {', '.join(ids[-5:]) or 'none'})"
        )
    return Path(store_dir) / SNAPSHOTS_DIR / wanted
