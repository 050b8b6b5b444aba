"""Products on the wire (relevance.v1.Product) and as rows of the products table, and
the one check every service applies to a product it is given."""

from __future__ import annotations

import operator
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


# A wire message's id and title in one C-level call: an attribute read through Python
# code per product was most of the check's cost on Score's path.
_MESSAGE_ID_AND_TITLE = operator.attrgetter("product_id", "title")


def _ids_and_titles(products: Sequence[ProductLike]) -> list[tuple[Any, Any]]:
    try:
        return list(map(_MESSAGE_ID_AND_TITLE, products))
    except AttributeError:  # rows of the products table (mappings), or a mix
        return [_id_and_title(product) for product in products]


def _empty_field(product_id: Any, title: Any) -> str | None:
    """The first of the required fields that is not a non-empty string, else None."""
    for name, value in (("product_id", product_id), ("title", title)):
        if not isinstance(value, str) or not value.strip():
            return name
    return None


def validate_product(product: ProductLike, field: str = "product") -> None:
    """Raises :class:`InvalidProduct` unless ``product`` (a products-table row or a wire
    message) has a product id and a title: every model reads the title, and every
    result is keyed by the id."""
    empty = _empty_field(*_id_and_title(product))
    if empty is not None:
        raise InvalidProduct(f"{field}.{empty}", "must not be empty")


def validate_products(
    products: Sequence[ProductLike], field: str = "products", *, unique_ids: bool = False
) -> None:
    """:func:`validate_product` for each of ``products`` (named ``field[i]``);
    ``unique_ids`` also rejects a product id seen earlier in the sequence."""
    # Score validates up to 256 products per request on its serving path: the ids and
    # titles are read in one pass and checked in bulk; the offending product is only
    # looked for (and its field name built) when the bulk check fails.
    fields = _ids_and_titles(products)
    valid = all(
        isinstance(product_id, str)
        and isinstance(title, str)
        and product_id.strip()
        and title.strip()
        for product_id, title in fields
    )
    if valid and (not unique_ids or len({product_id for product_id, _ in fields}) == len(fields)):
        return
    seen: set[str] = set()
    for i, (product_id, title) in enumerate(fields):
        empty = _empty_field(product_id, title)
        if empty is not None:
            raise InvalidProduct(f"{field}[{i}].{empty}", "must not be empty")
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
