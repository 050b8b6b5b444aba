"""Loaders of the public relevance sets, read unchanged, into the dataset schema.

* WANDS (Wayfair, ECIR 2022): ``product.csv``, ``query.csv``, ``label.csv``, all
  tab-separated. Grades: Exact -> 3, Partial -> 2, Irrelevant -> 0. WANDS has no
  splits, so queries are assigned train/dev/test by a hash of their id (70/15/15).
* ESCI (Amazon Shopping Queries, KDD Cup 2022):
  ``shopping_queries_dataset_examples.parquet`` and
  ``shopping_queries_dataset_products.parquet``. Grades: E 3, S 2, C 1, I 0. The
  ``small_version`` / ``large_version`` flag and the locale select rows; ESCI's test
  split is kept and 15% of its train queries (by hash) form dev.

Judgments from both have one (unknown) rater: one-hot soft labels, ``num_raters``
null, rationale fields null (unknown: the students' chain-of-thought loss masks them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from contracts.schema import NUM_GRADES, RATIONALE_FIELDS, Grade, Split
from training.data import storage

WANDS_GRADES = {"Exact": Grade.EXACT, "Partial": Grade.SUBSTITUTE, "Irrelevant": Grade.IRRELEVANT}
ESCI_GRADES = {
    "E": Grade.EXACT,
    "S": Grade.SUBSTITUTE,
    "C": Grade.COMPLEMENT,
    "I": Grade.IRRELEVANT,
}
ESCI_EXAMPLES = "shopping_queries_dataset_examples.parquet"
ESCI_PRODUCTS = "shopping_queries_dataset_products.parquet"


def hash_split(key: str, dev: float = 0.15, test: float = 0.15) -> str:
    """A stable split from a hash of ``key`` (the same on every machine and run)."""
    bucket = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    if bucket < test:
        return Split.TEST
    return Split.DEV if bucket < test + dev else Split.TRAIN


def _read_tsv(path: Path, required: list[str]) -> pa.Table:
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in required}, strings_can_be_null=True
        ),
    )
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}")
    return table


def _judgments(query_ids: list[str], product_ids: list[str], grades: list[int]) -> pa.Table:
    one_hot = [[1.0 if g == k else 0.0 for k in range(NUM_GRADES)] for g in grades]
    n = len(grades)
    return pa.table(
        {
            "query_id": query_ids,
            "product_id": product_ids,
            "grade": pa.array(grades, pa.int8()),
            "grade_probs": pa.array(one_hot, pa.list_(pa.float32(), NUM_GRADES)),
            "num_raters": pa.nulls(n, pa.int16()),
            **{f: pa.nulls(n, pa.int8()) for f in RATIONALE_FIELDS},
        }
    )


def load_wands(source_dir: Path | str, out_dir: Path | str) -> Path:
    """Convert WANDS' three CSV files in ``source_dir`` into a dataset at ``out_dir``."""
    src = Path(source_dir)
    products = _read_tsv(
        src / "product.csv",
        [
            "product_id",
            "product_name",
            "product_class",
            "category hierarchy",
            "product_description",
            "product_features",
        ],
    )
    queries = _read_tsv(src / "query.csv", ["query_id", "query", "query_class"])
    labels = _read_tsv(src / "label.csv", ["query_id", "product_id", "label"])

    rows = []
    for p in products.to_pylist():
        features = [f.strip() for f in (p["product_features"] or "").split("|") if f.strip()]
        attributes = {}
        for feature in features:
            key, sep, value = feature.partition(":")
            if sep and key.strip() and value.strip():
                attributes[key.strip()] = value.strip()
        hierarchy = [h.strip() for h in (p["category hierarchy"] or "").split("/") if h.strip()]
        rows.append(
            {
                "product_id": p["product_id"],
                "title": p["product_name"] or "",
                "product_type": p["product_class"],
                # The level above the leaf groups related product classes.
                "category": hierarchy[-2] if len(hierarchy) > 1 else (hierarchy or [None])[0],
                "brand": None,
                "attributes": attributes,
                "description": p["product_description"],
                "features": features,
            }
        )
    unknown = set(labels.column("label").to_pylist()) - set(WANDS_GRADES)
    if unknown:
        raise ValueError(f"label.csv column 'label' has unknown values {sorted(unknown)}")
    out = Path(out_dir)
    for name in storage.TABLES:
        storage.clear_table(out, name)
    storage.write_table(out, "products", rows)
    qids = queries.column("query_id").to_pylist()
    storage.write_table(
        out,
        "queries",
        pa.table(
            {
                "query_id": qids,
                "query": queries.column("query").to_pylist(),
                "query_type": queries.column("query_class").to_pylist(),
                "split": [hash_split(q) for q in qids],
            }
        ),
    )
    storage.write_table(
        out,
        "judgments",
        _judgments(
            labels.column("query_id").to_pylist(),
            labels.column("product_id").to_pylist(),
            [int(WANDS_GRADES[x]) for x in labels.column("label").to_pylist()],
        ),
    )
    storage.write_manifest(out, source="wands")
    return out


def load_esci(
    source_dir: Path | str, out_dir: Path | str, version: str = "small", locale: str = "us"
) -> Path:
    """Convert ESCI's parquet files in ``source_dir`` into a dataset at ``out_dir``.

    The 1 GB products file is scanned with a filter, never loaded whole.
    """
    if version not in ("small", "large"):
        raise ValueError(f"version must be 'small' or 'large', got {version!r}")
    src = Path(source_dir)
    for name in (ESCI_EXAMPLES, ESCI_PRODUCTS):
        if not (src / name).is_file():
            raise FileNotFoundError(f"missing {src / name}")
    examples = pq.read_table(
        src / ESCI_EXAMPLES,
        columns=[
            "query_id",
            "query",
            "product_id",
            "product_locale",
            "esci_label",
            f"{version}_version",
            "split",
        ],
        filters=[("product_locale", "=", locale), (f"{version}_version", "=", 1)],
    )
    if examples.num_rows == 0:
        raise ValueError(f"no ESCI examples for locale {locale!r} in the {version} version")
    unknown = set(examples.column("esci_label").unique().to_pylist()) - set(ESCI_GRADES)
    if unknown:
        raise ValueError(f"column 'esci_label' has unknown values {sorted(unknown)}")
    wanted = examples.column("product_id").unique()
    products = ds.dataset(src / ESCI_PRODUCTS, format="parquet").to_table(
        filter=(pc.field("product_locale") == locale) & pc.field("product_id").isin(wanted)
    )
    rows = [
        {
            "product_id": p["product_id"],
            "title": p["product_title"] or "",
            "product_type": None,
            "category": None,
            "brand": p["product_brand"],
            "attributes": {"color": p["product_color"]} if p["product_color"] else {},
            "description": p["product_description"],
            "features": [
                b.strip() for b in (p["product_bullet_point"] or "").split("\n") if b.strip()
            ],
        }
        for p in products.to_pylist()
    ]

    out = Path(out_dir)
    for name in storage.TABLES:
        storage.clear_table(out, name)
    storage.write_table(out, "products", rows)
    first = {}
    for q, text, split in zip(
        examples.column("query_id").to_pylist(),
        examples.column("query").to_pylist(),
        examples.column("split").to_pylist(),
        strict=True,
    ):
        if str(q) not in first:
            keep = Split.TEST if split == "test" else hash_split(str(q), dev=0.15, test=0.0)
            first[str(q)] = (text, keep)
    storage.write_table(
        out,
        "queries",
        pa.table(
            {
                "query_id": list(first),
                "query": [t for t, _ in first.values()],
                "query_type": [f"esci_{locale}"] * len(first),
                "split": [s for _, s in first.values()],
            }
        ),
    )
    storage.write_table(
        out,
        "judgments",
        _judgments(
            [str(q) for q in examples.column("query_id").to_pylist()],
            examples.column("product_id").to_pylist(),
            [int(ESCI_GRADES[x]) for x in examples.column("esci_label").to_pylist()],
        ),
    )
    storage.write_manifest(out, source=f"esci-{version}-{locale}")
    return out
