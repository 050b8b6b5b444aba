"""Datasets on disk: one directory of schema-versioned Parquet tables.

Layout of a dataset directory::

    manifest.json              schema_version, source, seed, counts, extra
    products.parquet           one file per table of ``schema.TABLES`` ...
    judgments/part-00000.parquet  ... or a folder of shards for large or appended tables

Writers cast every table to its schema in ``schema.TABLES`` so a wrong column fails
at write time, and readers check the manifest's schema version and the columns so a
stale or foreign dataset fails with a message naming what is wrong. Columns added to a
schema later (``schema.ADDED_COLUMNS``, all nullable) read as nulls from older tables.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from contracts.schema import ADDED_COLUMNS, SCHEMA_VERSION, TABLES

MANIFEST = "manifest.json"
# Tables whose rows belong to a query, so they can be filtered by the query's split.
_QUERY_KEYED = ("judgments", "teacher_labels")


class DatasetError(ValueError):
    """A dataset directory that is missing, stale or does not match the schema."""


def _schema(name: str) -> pa.Schema:
    if name not in TABLES:
        raise DatasetError(f"unknown table {name!r}; tables are {sorted(TABLES)}")
    return TABLES[name]


def _to_table(name: str, table_or_rows: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    schema = _schema(name)
    if isinstance(table_or_rows, pa.Table):
        missing = [f.name for f in schema if f.name not in table_or_rows.column_names]
        if missing and not set(missing) <= ADDED_COLUMNS:
            raise DatasetError(f"table {name!r} is missing columns {missing}")
        for column in missing:
            field = schema.field(column)
            table_or_rows = table_or_rows.append_column(
                field, pa.nulls(table_or_rows.num_rows, field.type)
            )
        try:
            return table_or_rows.select(schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise DatasetError(f"table {name!r} does not match its schema: {exc}") from exc
    rows = list(table_or_rows)
    for i, row in enumerate(rows):
        for field in schema:
            if not field.nullable and row.get(field.name) is None:
                raise DatasetError(f"table {name!r} row {i}: field {field.name!r} is required")
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DatasetError(f"table {name!r} does not match its schema: {exc}") from exc


def table_path(dataset_dir: Path | str, name: str) -> Path:
    """Where table ``name`` lives: ``<name>.parquet`` or the shard folder ``<name>/``."""
    _schema(name)
    root = Path(dataset_dir)
    single = root / f"{name}.parquet"
    return single if single.exists() else root / name


def has_table(dataset_dir: Path | str, name: str) -> bool:
    path = table_path(dataset_dir, name)
    return path.is_file() or (path.is_dir() and any(path.glob("*.parquet")))


def write_table(
    dataset_dir: Path | str, name: str, table_or_rows: pa.Table | Iterable[Mapping[str, Any]]
) -> Path:
    """Write (replace) table ``name`` as one Parquet file and update the manifest counts."""
    table = _to_table(name, table_or_rows)
    root = Path(dataset_dir)
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / name, ignore_errors=True)
    path = root / f"{name}.parquet"
    pq.write_table(table, path, compression="zstd")
    _update_counts(root, name)
    return path


def append_shard(
    dataset_dir: Path | str, name: str, table_or_rows: pa.Table | Iterable[Mapping[str, Any]]
) -> Path:
    """Add one shard to table ``name`` (a folder of Parquet files), for streamed writes."""
    table = _to_table(name, table_or_rows)
    root = Path(dataset_dir)
    single = root / f"{name}.parquet"
    if single.exists():
        raise DatasetError(f"table {name!r} is a single file at {single}; cannot append shards")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{len(list(folder.glob('part-*.parquet'))):05d}.parquet"
    pq.write_table(table, path, compression="zstd")
    _update_counts(root, name)
    return path


def clear_table(dataset_dir: Path | str, name: str) -> None:
    """Remove table ``name`` (file or shard folder), e.g. before re-streaming it."""
    root = Path(dataset_dir)
    _schema(name)
    (root / f"{name}.parquet").unlink(missing_ok=True)
    shutil.rmtree(root / name, ignore_errors=True)


def _dataset(dataset_dir: Path | str, name: str) -> ds.Dataset:
    check_manifest(dataset_dir)
    if not has_table(dataset_dir, name):
        raise DatasetError(f"dataset {dataset_dir} has no table {name!r}")
    dataset = ds.dataset(table_path(dataset_dir, name), format="parquet")
    missing = [f.name for f in _schema(name) if f.name not in dataset.schema.names]
    if missing and not set(missing) <= ADDED_COLUMNS:
        raise DatasetError(f"table {name!r} in {dataset_dir} is missing columns {missing}")
    if missing:
        # Written before those (nullable) columns existed: they read as nulls.
        return ds.dataset(table_path(dataset_dir, name), format="parquet", schema=_schema(name))
    return dataset


def _split_filter(dataset_dir: Path | str, name: str, split: str | None) -> ds.Expression | None:
    if split is None:
        return None
    if name == "queries":
        return pc.field("split") == split
    if name in _QUERY_KEYED:
        queries = read_table(dataset_dir, "queries", columns=["query_id"], filter_split=split)
        return pc.field("query_id").isin(queries.column("query_id"))
    raise DatasetError(
        f"table {name!r} has no split; filter_split applies to queries and "
        f"{', '.join(_QUERY_KEYED)}"
    )


def read_table(
    dataset_dir: Path | str,
    name: str,
    columns: Sequence[str] | None = None,
    filter_split: str | None = None,
) -> pa.Table:
    """Read table ``name``; ``filter_split`` keeps the rows of one split's queries."""
    dataset = _dataset(dataset_dir, name)
    cols = list(columns) if columns is not None else _schema(name).names
    unknown = [c for c in cols if c not in dataset.schema.names]
    if unknown:
        raise DatasetError(f"table {name!r} has no columns {unknown}")
    return dataset.to_table(columns=cols, filter=_split_filter(dataset_dir, name, filter_split))


def iter_batches(
    dataset_dir: Path | str,
    name: str,
    batch_size: int,
    columns: Sequence[str] | None = None,
    filter_split: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream table ``name`` in record batches of at most ``batch_size`` rows."""
    if batch_size <= 0:
        raise DatasetError(f"batch_size must be positive, got {batch_size}")
    dataset = _dataset(dataset_dir, name)
    cols = list(columns) if columns is not None else _schema(name).names
    scanner = dataset.scanner(
        columns=cols,
        filter=_split_filter(dataset_dir, name, filter_split),
        batch_size=batch_size,
    )
    for batch in scanner.to_batches():
        if batch.num_rows:
            yield batch


def write_manifest(
    dataset_dir: Path | str,
    source: str,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``manifest.json``; counts are filled from the tables present."""
    root = Path(dataset_dir)
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "seed": seed,
        "counts": {},
        "extra": dict(extra or {}),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    for name in TABLES:
        _update_counts(root, name)
    return root / MANIFEST


def read_manifest(dataset_dir: Path | str) -> dict[str, Any]:
    path = Path(dataset_dir) / MANIFEST
    if not path.exists():
        raise DatasetError(f"{dataset_dir} is not a dataset: no {MANIFEST}")
    return json.loads(path.read_text())


def check_manifest(dataset_dir: Path | str) -> dict[str, Any]:
    manifest = read_manifest(dataset_dir)
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DatasetError(
            f"dataset {dataset_dir} has schema_version {version!r}; this code reads "
            f"{SCHEMA_VERSION}. Re-create it with `relkd data simulate` or a loader."
        )
    return manifest


def _update_counts(root: Path, name: str) -> None:
    path = root / MANIFEST
    if not path.exists():
        return
    manifest = json.loads(path.read_text())
    if has_table(root, name):
        manifest["counts"][name] = ds.dataset(table_path(root, name), format="parquet").count_rows()
    else:
        manifest["counts"].pop(name, None)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
