"""One product check for rows and wire messages, naming the offending field."""

from __future__ import annotations

import pytest
from relevance.v1 import common_pb2, student_inference_pb2

from contracts.products import (
    InvalidProduct,
    product_message,
    product_row,
    validate_product,
    validate_products,
)

ROW = {"product_id": "p1", "title": "grey sofa", "brand": "acme", "attributes": {"colour": "grey"}}


@pytest.mark.parametrize(
    "product",
    [ROW, product_message(ROW), student_inference_pb2.ScoreProduct(product_id="p1", title="sofa")],
)
def test_rows_and_both_wire_messages_pass(product: object) -> None:
    validate_product(product)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("product", "field"),
    [
        ({"title": "sofa"}, "item.product_id"),
        ({"product_id": " ", "title": "sofa"}, "item.product_id"),
        ({"product_id": "p1", "title": None}, "item.title"),
        (common_pb2.Product(product_id="p1", title="  "), "item.title"),
        (student_inference_pb2.ScoreProduct(title="sofa"), "item.product_id"),
    ],
)
def test_a_missing_id_or_title_names_the_field(product: object, field: str) -> None:
    with pytest.raises(InvalidProduct) as error:
        validate_product(product, "item")  # type: ignore[arg-type]
    assert (error.value.field, error.value.problem) == (field, "must not be empty")
    assert str(error.value) == f"{field}: must not be empty"


def test_sequences_name_the_index_and_optionally_reject_duplicates() -> None:
    products = [ROW, {"product_id": "p2", "title": "desk"}, ROW]
    validate_products(products)
    with pytest.raises(InvalidProduct, match=r"^products\[2\]\.product_id: duplicate 'p1'$"):
        validate_products(products, unique_ids=True)
    with pytest.raises(InvalidProduct, match=r"^batch\[1\]\.title"):
        validate_products([ROW, {"product_id": "p2", "title": ""}], "batch")
    # The first offending product is named, whatever its problem.
    with pytest.raises(InvalidProduct, match=r"^products\[1\]\.product_id: duplicate"):
        validate_products([ROW, ROW, {"product_id": [], "title": ""}], unique_ids=True)


def test_sequences_of_wire_messages_and_mixes_are_checked_alike() -> None:
    sofa = student_inference_pb2.ScoreProduct(product_id="p1", title="sofa")
    validate_products([sofa, product_message({"product_id": "p2", "title": "desk"})])
    with pytest.raises(InvalidProduct, match=r"^products\[1\]\.product_id: duplicate 'p1'$"):
        validate_products([sofa, sofa], unique_ids=True)
    untitled = student_inference_pb2.ScoreProduct(product_id="p2", title=" ")
    with pytest.raises(InvalidProduct, match=r"^products\[1\]\.title"):
        validate_products([sofa, untitled])
    # A message then a row: each read its own way.
    with pytest.raises(InvalidProduct, match=r"^products\[1\]\.title"):
        validate_products([sofa, {"product_id": "p2", "title": None}])
    validate_products([sofa, {"product_id": "p2", "title": "desk"}], unique_ids=True)


def test_wire_and_row_forms_round_trip() -> None:
    row = product_row(product_message(ROW))
    assert row["product_id"] == "p1" and row["attributes"] == {"colour": "grey"}
    assert row["description"] is None and row["features"] == []
