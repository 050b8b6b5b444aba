"""Judged (query, product) pairs of one dataset split, as the teacher trains on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import schema
from training.data.storage import read_table


@dataclass(frozen=True)
class JudgedPair:
    query_id: str
    query: str
    product: dict[str, Any]
    # Soft target over the NUM_GRADES grades (raters' vote shares; sums to 1).
    target: np.ndarray
    grade: int
    # The judgment's rationale fields; None where the source has none (WANDS, ESCI).
    category_match: schema.Match | None
    brand_match: schema.Match | None
    attribute_match: schema.Match | None

    @property
    def rationale(self) -> tuple[schema.Match | None, ...]:
        """The rationale fields in schema.RATIONALE_FIELDS order."""
        return (self.category_match, self.brand_match, self.attribute_match)


def soft_target(row: dict[str, Any]) -> np.ndarray:
    """The raters' distribution, or a one-hot of ``grade`` when the source has none."""
    grade = int(row["grade"])
    if not 0 <= grade < schema.NUM_GRADES:
        raise ValueError(f"judgments.grade: {grade} outside 0..{schema.NUM_GRADES - 1}")
    probs = row.get("grade_probs")
    if probs is None:
        target = np.zeros(schema.NUM_GRADES, dtype=np.float32)
        target[grade] = 1.0
        return target
    target = np.asarray(probs, dtype=np.float32)
    total = float(target.sum())
    if target.shape != (schema.NUM_GRADES,) or total <= 0 or (target < 0).any():
        raise ValueError(
            f"judgments.grade_probs for ({row['query_id']}, {row['product_id']}): "
            f"expected {schema.NUM_GRADES} non-negative shares, got {list(probs)}"
        )
    return target / total


def _match(value: Any) -> schema.Match | None:
    return schema.Match(int(value)) if value is not None else None


def load_split(dataset_dir: Path, split: str, limit: int = 0, seed: int = 0) -> list[JudgedPair]:
    """Judged pairs of the queries in ``split``; ``limit`` > 0 keeps a seeded random subset."""
    if split not in schema.Split.ALL:
        raise ValueError(f"split: {split!r} is not one of {schema.Split.ALL}")
    queries = read_table(dataset_dir, "queries", ["query_id", "query"], filter_split=split)
    query_text = dict(
        zip(queries["query_id"].to_pylist(), queries["query"].to_pylist(), strict=True)
    )
    rows = read_table(dataset_dir, "judgments", filter_split=split).to_pylist()
    if limit and len(rows) > limit:
        keep = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    needed = pa.array(sorted({row["product_id"] for row in rows}), type=pa.string())
    products_table = read_table(dataset_dir, "products")
    products_table = products_table.filter(pc.is_in(products_table["product_id"], needed))
    products = {p["product_id"]: p for p in products_table.to_pylist()}
    pairs = []
    for row in rows:
        product = products.get(row["product_id"])
        if product is None:
            raise ValueError(f"judgments.product_id: {row['product_id']!r} not in products")
        pairs.append(
            JudgedPair(
                query_id=row["query_id"],
                query=query_text[row["query_id"]],
                product=product,
                target=soft_target(row),
                grade=int(row["grade"]),
                category_match=_match(row.get("category_match")),
                brand_match=_match(row.get("brand_match")),
                attribute_match=_match(row.get("attribute_match")),
            )
        )
    return pairs
