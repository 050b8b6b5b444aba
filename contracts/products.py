"""Products on the wire (relevance.v1.Product) and as rows of the products table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relevance.v1 import common_pb2


def product_message(product: Mapping[str, Any]) -> common_pb2.Product:
    """A products-table row (attributes as a dict or key/value pairs) as the wire Product."""
    return common_pb2.Product(
        product_id=product["product_id"],
        title=product["title"],
        product_type=product.get("product_type") or "",
        category=product.get("category") or "",
        brand=product.get("brand") or "",
        # Parquet maps read back as (key, value) pairs; dict() takes both shapes.
        attributes={
            k: v for k, v in dict(product.get("attributes") or {}).items() if v is not None
        },
        description=product.get("description") or "",
        features=[f for f in product.get("features") or () if f],
    )


def product_row(product: common_pb2.Product) -> dict[str, Any]:
    """The wire Product as a products-table row (schema.PRODUCTS); empty strings become None."""
    return {
        "product_id": product.product_id,
        "title": product.title,
        "product_type": product.product_type or None,
        "category": product.category or None,
        "brand": product.brand or None,
        "attributes": dict(product.attributes),
        "description": product.description or None,
        "features": list(product.features),
    }
