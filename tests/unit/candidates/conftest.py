"""A tiny in-memory catalog (schema.PRODUCTS) and the real MiniLM encoder, shared per session."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch

from contracts import schema
from services.candidate_generation.index import CatalogIndex, MiniLMEncoder

TYPES = {
    "sofa": "living room seating",
    "area rug": "rugs",
    "table lamp": "lighting",
    "dining table": "dining furniture",
    "office chair": "office furniture",
}
COLORS = ("red", "navy", "grey")
MATERIALS = ("leather", "wool", "oak")
BRANDS = ("Acme", "Nordhaus")


def tiny_catalog() -> list[dict[str, Any]]:
    """90 products: every type x color x material x brand, ids p000..p089."""
    products = []
    combos = itertools.product(TYPES.items(), COLORS, MATERIALS, BRANDS)
    for i, ((ptype, category), color, material, brand) in enumerate(combos):
        products.append(
            {
                "product_id": f"p{i:03d}",
                "title": f"{brand} {color} {material} {ptype}",
                "product_type": ptype,
                "category": category,
                "brand": brand,
                "attributes": {"color": color, "material": material},
                "description": f"A {color} {ptype} made of {material}.",
                "features": [f"{material} finish"],
            }
        )
    return products


@pytest.fixture(scope="session")
def catalog() -> list[dict[str, Any]]:
    return tiny_catalog()


@pytest.fixture(scope="session")
def catalog_table(catalog: list[dict[str, Any]]) -> pa.Table:
    rows = [{**p, "attributes": list(p["attributes"].items())} for p in catalog]
    return pa.Table.from_pylist(rows, schema=schema.PRODUCTS)


@pytest.fixture(scope="session")
def encoder() -> MiniLMEncoder:
    # Many threads on a few shared cores are slower than one.
    torch.set_num_threads(1)
    return MiniLMEncoder()


@pytest.fixture(scope="session")
def saved_index(
    catalog_table: pa.Table, encoder: MiniLMEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny catalog encoded once; tests load fresh copies, which encodes nothing."""
    path = tmp_path_factory.mktemp("catalog-index")
    CatalogIndex.build(catalog_table, encoder).save(path)
    return path


@pytest.fixture
def index(saved_index: Path, encoder: MiniLMEncoder) -> CatalogIndex:
    return CatalogIndex.load(saved_index, encoder)
