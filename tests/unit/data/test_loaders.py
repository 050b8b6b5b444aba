from pathlib import Path

import pytest

from contracts.schema import TABLES
from training.data import storage
from training.data.loaders import load_esci, load_wands

FIXTURES = Path(__file__).parents[2] / "fixtures"


def _check_schema(dataset):
    for name in ("products", "queries", "judgments"):
        assert storage.read_table(dataset, name).schema.names == TABLES[name].names


def test_wands_loads_into_schema(tmp_path):
    out = load_wands(FIXTURES / "wands", tmp_path)
    _check_schema(out)
    products = {p["product_id"]: p for p in storage.read_table(out, "products").to_pylist()}
    assert products["2"]["title"] == 'aleah 48" wide console table'
    assert dict(products["0"]["attributes"])["color"] == "white"
    assert products["0"]["category"] == "Beds & Headboards"
    grades = {
        (j["query_id"], j["product_id"]): j["grade"]
        for j in storage.read_table(out, "judgments").to_pylist()
    }
    assert grades[("0", "3")] == 3 and grades[("1", "2")] == 2 and grades[("0", "0")] == 0
    queries = storage.read_table(out, "queries").to_pylist()
    assert queries[2]["query"] == 'writing desk 48"'
    assert {q["split"] for q in queries} <= {"train", "dev", "test"}


def test_esci_filters_version_and_locale(tmp_path):
    out = load_esci(FIXTURES / "esci", tmp_path, version="small", locale="us")
    _check_schema(out)
    judgments = storage.read_table(out, "judgments").to_pylist()
    # small_version=0 rows and the es locale are left out.
    assert {(j["query_id"], j["product_id"]) for j in judgments} == {
        ("0", "B07X3Y6B1V"),
        ("0", "B06W2LB17J"),
        ("1", "B08L3B9B9P"),
        ("1", "B07P4CF3DP"),
    }
    assert {j["product_id"]: j["grade"] for j in judgments} == {
        "B07X3Y6B1V": 3,
        "B06W2LB17J": 2,
        "B08L3B9B9P": 3,
        "B07P4CF3DP": 1,
    }
    products = {p["product_id"]: p for p in storage.read_table(out, "products").to_pylist()}
    assert len(products) == 4  # one row per product, the jp duplicate is not taken
    assert products["B07X3Y6B1V"]["features"] == [
        "OUTSTANDING PERFORMANCE: 80 CFM",
        "Quiet 1.1 sones",
    ]
    splits = {q["query_id"]: q["split"] for q in storage.read_table(out, "queries").to_pylist()}
    assert splits["1"] == "test" and splits["0"] in {"train", "dev"}
    spanish = load_esci(FIXTURES / "esci", tmp_path / "es", locale="es")
    assert storage.read_table(spanish, "products").num_rows == 2


def test_esci_rejects_bad_version(tmp_path):
    with pytest.raises(ValueError, match="version"):
        load_esci(FIXTURES / "esci", tmp_path, version="medium")
