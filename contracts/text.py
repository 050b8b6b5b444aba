"""The one canonical rendering of a product as text.

BM25, the bi-encoder, the teacher and the students all read products through
``product_text`` so that a model trained on one rendering is served the same one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

TEXT_FIELDS = (
    "title",
    "product_type",
    "category",
    "brand",
    "attributes",
    "description",
    "features",
)
# Prefixes tell a model which field a phrase came from; the title needs none.
_LABELS = {
    "product_type": "type",
    "category": "category",
    "brand": "brand",
    "attributes": "attributes",
    "description": "description",
    "features": "features",
}


def attribute_pairs(value: Any) -> list[tuple[str, str]]:
    """A Parquet map column arrives as a list of (key, value) pairs, a dict elsewhere."""
    if value is None:
        return []
    items = value.items() if isinstance(value, Mapping) else value
    return [(str(k), str(v)) for k, v in items if v is not None and v != ""]


def _render(field: str, value: Any) -> str:
    if field == "attributes":
        return "; ".join(f"{k}: {v}" for k, v in attribute_pairs(value))
    if field == "features":
        return "; ".join(str(v) for v in value or () if v)
    return "" if value is None else str(value).strip()


def product_text(product: Mapping[str, Any], fields: Sequence[str] = ("title",)) -> str:
    """Render ``fields`` of ``product`` (a products-table row) as one string.

    Fields are joined with `` | `` in the order given; empty fields are left out.
    """
    unknown = [f for f in fields if f not in TEXT_FIELDS]
    if unknown:
        raise ValueError(f"unknown product text fields {unknown}; choose from {TEXT_FIELDS}")
    parts = []
    for field in fields:
        text = _render(field, product.get(field))
        if text:
            parts.append(text if field == "title" else f"{_LABELS[field]}: {text}")
    return " | ".join(parts)


def normalize_query(text: str) -> str:
    return " ".join(text.lower().split())


def query_id_for(text: str) -> str:
    """A stable id from the normalised text, so the same query from two sources is one query.

    Candidate generation, student inference (served samples) and the disagreement
    monitor all name a query by it.
    """
    return "q-" + hashlib.sha1(normalize_query(text).encode()).hexdigest()[:16]
