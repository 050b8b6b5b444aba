"""How a (query, product) pair is written as text for the teacher.

The teacher is meant to see *rich* product text (title, type, brand, attributes,
description) while the student later sees less; the template is part of the teacher's
identity, so it is stored in ``teacher.json`` and reused verbatim at labeling time.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

TEMPLATES: dict[str, str] = {
    "rich": (
        "Query: {query}\n"
        "Product: {title}\n"
        "Type: {product_type}\n"
        "Category: {category}\n"
        "Brand: {brand}\n"
        "Attributes: {attributes}\n"
        "Features: {features}\n"
        "Description: {description}"
    ),
    "title": "Query: {query}\nProduct: {title}",
}

FIELDS = frozenset(
    {"query", "title", "product_type", "category", "brand", "attributes", "features", "description"}
)


def resolve_template(template: str) -> str:
    """A template name from :data:`TEMPLATES`, or a format string using :data:`FIELDS`."""
    text = TEMPLATES.get(template, template)
    used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    unknown = used - FIELDS
    if unknown:
        raise ValueError(
            f"template: unknown field(s) {sorted(unknown)}; allowed: {sorted(FIELDS)} "
            f"or a named template {sorted(TEMPLATES)}"
        )
    if "query" not in used:
        raise ValueError("template: must contain {query}")
    return text


def _attributes_text(attributes: Any) -> str:
    # Parquet maps come back from pyarrow as lists of (key, value) pairs, JSON as dicts.
    if not attributes:
        return ""
    items = attributes.items() if isinstance(attributes, Mapping) else attributes
    return "; ".join(f"{key}: {value}" for key, value in items)


def render(template: str, query: str, product: Mapping[str, Any]) -> str:
    """Fill a resolved template with one pair; missing product fields render empty."""
    if "title" not in product:
        raise ValueError(f"product {product.get('product_id', '?')!r}: missing field 'title'")
    values = {
        "query": query,
        "title": product.get("title") or "",
        "product_type": product.get("product_type") or "",
        "category": product.get("category") or "",
        "brand": product.get("brand") or "",
        "attributes": _attributes_text(product.get("attributes")),
        "features": "; ".join(product.get("features") or []),
        "description": product.get("description") or "",
    }
    return template.format(**values)
