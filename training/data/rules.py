"""The simulator's ground truth: every grade and rationale comes from these rules.

A query is a ``QuerySpec`` (what the shopper asked for: a product type, a brand,
attribute values, each optional). A product is a row of ``CatalogArrays``. Three
step-by-step checks, the same ones the explainable teacher is asked to reason about,
give the rationale fields, and the grade follows from them on the ESCI scale:

* category_match: the product's type is the query's type (NOT_STATED if no type asked);
* brand_match: the product's brand is the query's brand (NOT_STATED if no brand asked);
* attribute_match: every attribute value asked for is the product's (NOT_STATED if none).

Query names a type:
    same type,        nothing mismatches  -> 3 Exact
    same type,        something mismatches -> 2 Substitute (right kind, wrong spec)
    substitute type,  nothing mismatches  -> 2 Substitute (e.g. a loveseat for "sofa")
    substitute type,  something mismatches -> 0 Irrelevant
    complement type                        -> 1 Complement (e.g. a sofa cover for "sofa")
    unrelated type                         -> 0 Irrelevant
Query names no type (brand and/or attributes only), counting each asked value:
    all asked values match                 -> 3 Exact
    some match, some do not                -> 2 Substitute
    none match                             -> 0 Irrelevant

WANDS' grades map from these as Exact -> Exact, Substitute and Complement -> Partial,
Irrelevant -> Irrelevant (see docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contracts.schema import Grade, Match
from training.data.taxonomy import COMPLEMENT, RELATION, SAME, SUBSTITUTE

ATTRIBUTE_NAMES = ("color", "material", "size", "style")


@dataclass(frozen=True)
class QuerySpec:
    """What a query asks for, as indices into the taxonomy (-1: not asked)."""

    product_type: int = -1
    brand: int = -1
    attributes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.attributes) - set(ATTRIBUTE_NAMES)
        if unknown:
            raise ValueError(f"QuerySpec.attributes has unknown names {sorted(unknown)}")


@dataclass(frozen=True)
class CatalogArrays:
    """The catalog as parallel integer arrays, one entry per product."""

    product_type: np.ndarray
    brand: np.ndarray
    color: np.ndarray
    material: np.ndarray
    size: np.ndarray
    style: np.ndarray
    price_band: np.ndarray

    def __len__(self) -> int:
        return len(self.product_type)

    def attribute(self, name: str) -> np.ndarray:
        return getattr(self, name)


@dataclass(frozen=True)
class Judgment:
    grade: np.ndarray
    category_match: np.ndarray
    brand_match: np.ndarray
    attribute_match: np.ndarray


def _match(stated: bool, equal: np.ndarray) -> np.ndarray:
    if not stated:
        return np.full(len(equal), Match.NOT_STATED, dtype=np.int8)
    return np.where(equal, Match.MATCH, Match.MISMATCH).astype(np.int8)


def judge(spec: QuerySpec, catalog: CatalogArrays, idx: np.ndarray) -> Judgment:
    """Grade products ``idx`` of ``catalog`` for ``spec`` (vectorised over ``idx``)."""
    ptype = catalog.product_type[idx]
    n = len(idx)
    brand_eq = catalog.brand[idx] == spec.brand
    attr_eq = {name: catalog.attribute(name)[idx] == v for name, v in spec.attributes.items()}
    all_attrs_eq = np.logical_and.reduce(list(attr_eq.values())) if attr_eq else np.ones(n, bool)

    category = _match(spec.product_type >= 0, ptype == spec.product_type)
    brand = _match(spec.brand >= 0, brand_eq)
    attribute = _match(bool(attr_eq), all_attrs_eq)
    mismatch = (brand == Match.MISMATCH) | (attribute == Match.MISMATCH)

    if spec.product_type >= 0:
        relation = RELATION[spec.product_type, ptype]
        grade = np.full(n, Grade.IRRELEVANT, dtype=np.int8)
        grade[(relation == SAME) & ~mismatch] = Grade.EXACT
        grade[(relation == SAME) & mismatch] = Grade.SUBSTITUTE
        grade[(relation == SUBSTITUTE) & ~mismatch] = Grade.SUBSTITUTE
        grade[relation == COMPLEMENT] = Grade.COMPLEMENT
    else:
        checks = list(attr_eq.values()) + ([brand_eq] if spec.brand >= 0 else [])
        if not checks:
            raise ValueError("a QuerySpec must ask for a type, a brand or an attribute")
        matched = np.sum(checks, axis=0)
        grade = np.where(
            matched == len(checks),
            Grade.EXACT,
            np.where(matched > 0, Grade.SUBSTITUTE, Grade.IRRELEVANT),
        ).astype(np.int8)
    return Judgment(grade, category, brand, attribute)
