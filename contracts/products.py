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


def _id_and_title(product: ProductLike) -> tuple[Any, Any]:
    if isinstance(product, Mapping):
        return product.get("product_id"), product.get("title")
    return product.product_id, product.title


def _checked_id(product: ProductLike, field: str) -> str:
    """``product``'s id, once its id and title are known to be non-empty strings."""
    product_id, title = _id_and_title(product)
    for name, value in (("product_id", product_id), ("title", title)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidProduct(f"{field}.{name}", "must not be empty")
    return product_id


def validate_product(product: ProductLike, field: str = "product") -> None:
    """Raises :class:`InvalidProduct` unless ``product`` (a products-table row or a wire
    message) has a product id and a title: every model reads the title, and every
    result is keyed by the id."""
    _checked_id(product, field)


def validate_products(
    products: Sequence[ProductLike], field: str = "products", *, unique_ids: bool = False
) -> None:
    """:func:`validate_product` for each of ``products`` (named ``field[i]``);
    ``unique_ids`` also rejects a product id seen earlier in the sequence."""
    # One pass, one type check per product: Score validates up to 256 products per
    # request on the serving path.
    seen: set[str] = set()
    for i, product in enumerate(products):
        product_id = _checked_id(product, f"{field}[{i}]")
        if unique_ids:
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
