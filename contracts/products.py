"""Products on the wire (relevance.v1.Product) and as rows of the products table, and
the one check every service applies to a product it is given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from relevance.v1 import common_pb2


class _ProductMessage(Protocol):
    # relevance.v1.Product and relevance.v1.ScoreProduct both carry these.
    product_id: str
    title: str


ProductLike = Mapping[str, Any] | _ProductMessage


class InvalidProduct(ValueError):
    """A product that breaks the contract; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _value(product: ProductLike, name: str) -> Any:
    return product.get(name) if isinstance(product, Mapping) else getattr(product, name)


def validate_product(product: ProductLike, field: str = "product") -> None:
    """Raises :class:`InvalidProduct` unless ``product`` (a products-table row or a wire
    message) has a product id and a title: every model reads the title, and every
    result is keyed by the id."""
    for name in ("product_id", "title"):
        value = _value(product, name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidProduct(f"{field}.{name}", "must not be empty")


def validate_products(
    products: Sequence[ProductLike], field: str = "products", *, unique_ids: bool = False
) -> None:
    """:func:`validate_product` for each of ``products`` (named ``field[i]``);
    ``unique_ids`` also rejects a product id seen earlier in the sequence."""
    seen: set[str] = set()
    for i, product in enumerate(products):
        validate_product(product, f"{field}[{i}]")
        if unique_ids:
            product_id = _value(product, "product_id")
            if product_id in seen:
                raise InvalidProduct(f"{field}[{i}].product_id", f"duplicate {product_id!r}")
            seen.add(product_id)


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
