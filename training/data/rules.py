"""The simulator's ground truth: every grade and rationale comes from these rules.

A query is a ``QuerySpec`` (what the shopper asked for: a product type, a brand,
attribute values, each optional). A product is a row of ``CatalogArrays``. Three
step-by-step checks, the same ones the explainable teacher is asked to reason about,
give the rationale fields, and the grade follows from them on the ESCI scale:

* category_match: the product's type is the query's type (NOT_STATED if no type asked);
* brand_match: the product's brand is the query's brand (NOT_STATED if no brand asked);
* attribute_match: every attribute value asked for is the product's and no value the
  query excludes is ("sofa not leather"; NOT_STATED if none asked or excluded).

A query may exclude a brand instead of naming one ("alternative to harlow sofa"): then
brand_match is MATCH for any other brand and MISMATCH for the excluded one.

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
    """What a query asks for, as indices into the taxonomy (-1: not asked).

    ``excluded_attributes`` are values the shopper rules out ("not leather");
    ``excluded_brand`` a brand they want an alternative to. Both come only from the
    "hard" simulator profile."""

    product_type: int = -1
    brand: int = -1
    attributes: dict[str, int] = field(default_factory=dict)
    excluded_attributes: dict[str, int] = field(default_factory=dict)
    excluded_brand: int = -1

    def __post_init__(self) -> None:
        for name in ("attributes", "excluded_attributes"):
            unknown = set(getattr(self, name)) - set(ATTRIBUTE_NAMES)
            if unknown:
                raise ValueError(f"QuerySpec.{name} has unknown names {sorted(unknown)}")
        if self.brand >= 0 and self.excluded_brand >= 0:
            raise ValueError("a QuerySpec names a brand or excludes one, not both")


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
    if spec.excluded_brand >= 0:
        brand_eq = catalog.brand[idx] != spec.excluded_brand
    else:
        brand_eq = catalog.brand[idx] == spec.brand
    attr_eq = {name: catalog.attribute(name)[idx] == v for name, v in spec.attributes.items()}
    attr_ok = list(attr_eq.values()) + [
        catalog.attribute(name)[idx] != v for name, v in spec.excluded_attributes.items()
    ]
    all_attrs_ok = np.logical_and.reduce(attr_ok) if attr_ok else np.ones(n, bool)

    category = _match(spec.product_type >= 0, ptype == spec.product_type)
    brand = _match(spec.brand >= 0 or spec.excluded_brand >= 0, brand_eq)
    attribute = _match(bool(attr_ok), all_attrs_ok)
    mismatch = (brand == Match.MISMATCH) | (attribute == Match.MISMATCH)

    if spec.product_type >= 0:
        relation = RELATION[spec.product_type, ptype]
        grade = np.full(n, Grade.IRRELEVANT, dtype=np.int8)
        grade[(relation == SAME) & ~mismatch] = Grade.EXACT
        grade[(relation == SAME) & mismatch] = Grade.SUBSTITUTE
        grade[(relation == SUBSTITUTE) & ~mismatch] = Grade.SUBSTITUTE
        grade[relation == COMPLEMENT] = Grade.COMPLEMENT
    else:
        brand_stated = spec.brand >= 0 or spec.excluded_brand >= 0
        checks = attr_ok + ([brand_eq] if brand_stated else [])
        if not checks:
            raise ValueError("a QuerySpec must ask for a type, a brand or an attribute")
        matched = np.sum(checks, axis=0)
        grade = np.where(
            matched == len(checks),
            Grade.EXACT,
            np.where(matched > 0, Grade.SUBSTITUTE, Grade.IRRELEVANT),
        ).astype(np.int8)
    return Judgment(grade, category, brand, attribute)
