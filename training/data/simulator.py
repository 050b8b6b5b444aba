"""A deterministic simulated catalog with graded ground truth and noisy raters.

``simulate`` writes a dataset (see ``training.data.storage``) in five steps:

1. catalog: product types drawn from ``taxonomy.TYPES``, brands with family
   affinities, attribute values valid for each type, all as integer arrays so that
   1M products cost seconds;
2. listings: titles, descriptions and bullet features rendered the way sellers
   write them (attribute order varies, abbreviations, synonyms, marketing words);
3. queries: anchored on a random product so that exact matches exist, written in
   the styles shoppers use (type only, type + attributes, brand + type, attributes
   only, misspellings, synonyms, long tail), unique across splits;
4. pools: per labeled query, a realistic set of products to judge (exact matches,
   same-type near misses, substitutes, complements, hard negatives sharing words,
   random negatives), graded by ``training.data.rules``;
5. raters: several noisy simulated raters per pair; their vote shares are the soft
   labels and their majority the hard grade.

A ``SimulatorProfile`` sets the difficulty: ``standard`` (the default the tests and the
demo use) writes listings and queries that mostly share words, so BM25 ranks well;
``hard`` leaves headroom for models that understand the text: listings mostly use the
canonical type name while shoppers paraphrase it or use synonyms and variant attribute
spellings, queries exclude attribute values or ask for an alternative to a brand,
pools carry more substitutes, complements and look-alikes, and product types follow a
long-tailed popularity. docs/data.md gives the calibration.

The same seed gives byte-identical tables.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.progress import Progress

from contracts.schema import NUM_GRADES, Split
from training.data import storage
from training.data.rules import ATTRIBUTE_NAMES, CatalogArrays, QuerySpec, judge
from training.data.settings import DataSettings
from training.data.taxonomy import (
    ALL_MATERIALS,
    ALL_SIZES,
    ATTRIBUTES,
    BRANDS,
    COLORS,
    FAMILIES,
    MARKETING_WORDS,
    PARAPHRASES,
    PRICE_BANDS,
    QUERY_SUFFIXES,
    RELATION,
    STYLES,
    SUBSTITUTE,
    TYPES,
    UNRELATED,
    type_material_ids,
    type_size_ids,
)
from training.data.taxonomy import COMPLEMENT as COMPLEMENT_REL

DEFAULT_QUERY_MIX: dict[str, float] = {
    "type_only": 0.14,
    "type_attr": 0.24,
    "brand_type": 0.12,
    "attr_only": 0.08,
    "misspelling": 0.12,
    "synonym": 0.14,
    "long_tail": 0.16,
}
# Query types only the hard profile writes (see _QueryWriter.write).
HARD_QUERY_TYPES = ("paraphrase", "negation", "brand_substitute")
QUERY_TYPES = (*DEFAULT_QUERY_MIX, *HARD_QUERY_TYPES)
_NEGATION_TEMPLATES = ("{t} not {v}", "{t} without {v}", "non {v} {t}", "{t} no {v}")
_BRAND_SUBSTITUTE_TEMPLATES = (
    "alternative to {b} {t}",
    "{t} like {b} but cheaper",
    "{t} similar to {b}",
    "{b} {t} dupe",
)
# Words per query when the real WANDS queries are not at hand (their shape, rounded).
_DEFAULT_LENGTHS = {1: 0.05, 2: 0.23, 3: 0.35, 4: 0.21, 5: 0.09, 6: 0.04, 7: 0.03}
_FEATURE_EXTRAS = (
    "Easy assembly, tools included",
    "Stain-resistant finish",
    "Sturdy construction for everyday use",
    "Wipe clean with a damp cloth",
    "1-year limited warranty",
    "Ships in one box",
    "Pet friendly",
    "Designed in the USA",
)
_PERMUTATIONS = tuple(itertools.permutations(range(4)))


@dataclass(frozen=True)
class PoolShape:
    """How many products of each kind to judge per labeled query (upper bounds)."""

    exact: int = 8
    same_type: int = 6
    substitute: int = 6
    complement: int = 4
    shared_words: int = 4
    random: int = 4

    @property
    def total(self) -> int:
        return (
            self.exact
            + self.same_type
            + self.substitute
            + self.complement
            + self.shared_words
            + self.random
        )


@dataclass(frozen=True)
class SimulatorProfile:
    """The knobs that set how hard the simulated data is for lexical matching."""

    query_mix: Mapping[str, float]
    pool: PoolShape
    # Share of titles that name the product type by its canonical name (else a synonym).
    listing_type_name_share: float = 0.7
    # Chance a listing writes an attribute value in a variant spelling.
    listing_attribute_variant: float = 0.2
    # Chance a title leaves one attribute to the description.
    title_drops_attribute: float = 0.1
    # Chance a query writes an attribute value in a variant spelling.
    query_attribute_variant: float = 0.35
    # Product-type popularity: None draws weights uniformly in [0.5, 1.5]; a number s
    # gives Zipf weights 1 / rank**s over a shuffled type order (a long tail of rare types).
    type_popularity_zipf: float | None = None


PROFILES: dict[str, SimulatorProfile] = {
    "standard": SimulatorProfile(query_mix=DEFAULT_QUERY_MIX, pool=PoolShape()),
    "hard": SimulatorProfile(
        query_mix={
            "type_only": 0.04,
            "type_attr": 0.08,
            "brand_type": 0.06,
            "attr_only": 0.04,
            "misspelling": 0.08,
            "synonym": 0.18,
            "long_tail": 0.10,
            "paraphrase": 0.20,
            "negation": 0.14,
            "brand_substitute": 0.08,
        },
        pool=PoolShape(exact=6, same_type=6, substitute=8, complement=6, shared_words=6, random=2),
        listing_type_name_share=0.9,
        listing_attribute_variant=0.05,
        title_drops_attribute=0.4,
        query_attribute_variant=0.7,
        type_popularity_zipf=1.0,
    ),
}


@dataclass
class _Query:
    text: str
    query_type: str
    spec: QuerySpec
    # The product the query was written from: it matches everything the query asks.
    anchor: int


def _query_lengths(path: Path) -> dict[int, float]:
    """Word-count distribution of real WANDS queries, when the file is readable."""
    if not path.is_file():
        return _DEFAULT_LENGTHS
    with path.open(newline="", encoding="utf-8") as f:
        counts = Counter(
            len(row["query"].split())
            for row in csv.DictReader(f, delimiter="\t")
            if row.get("query")
        )
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())} if total else _DEFAULT_LENGTHS


# ---------------------------------------------------------------------------- catalog


def _brand_families(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each brand sells in three families, so a brand query has exact and near hits."""
    families = list(FAMILIES)
    owned: dict[str, list[int]] = {f: [] for f in families}
    for b in range(len(BRANDS)):
        for f in rng.choice(len(families), size=3, replace=False):
            owned[families[f]].append(b)
    for brands in owned.values():
        if len(brands) < 3:
            brands.extend(int(b) for b in rng.choice(len(BRANDS), 3, replace=False))
    return {f: np.array(sorted(set(b)), dtype=np.int16) for f, b in owned.items()}


def make_catalog(
    num_products: int, rng: np.random.Generator, type_popularity_zipf: float | None = None
) -> CatalogArrays:
    n_types = len(TYPES)
    weights = rng.uniform(0.5, 1.5, n_types)
    if type_popularity_zipf is not None:
        weights = 1.0 / (1.0 + rng.permutation(n_types)) ** type_popularity_zipf
    ptype = rng.choice(n_types, size=num_products, p=weights / weights.sum()).astype(np.int16)
    brand = np.empty(num_products, np.int16)
    material = np.empty(num_products, np.int16)
    size = np.empty(num_products, np.int16)
    by_family = _brand_families(rng)
    for t, spec in enumerate(TYPES):
        rows = np.flatnonzero(ptype == t)
        brand[rows] = rng.choice(by_family[spec.family], size=len(rows))
        material[rows] = rng.choice(type_material_ids(spec), size=len(rows))
        size[rows] = rng.choice(type_size_ids(spec), size=len(rows))
    color_p = rng.uniform(0.5, 1.5, len(COLORS))
    return CatalogArrays(
        product_type=ptype,
        brand=brand,
        color=rng.choice(len(COLORS), size=num_products, p=color_p / color_p.sum()).astype(
            np.int16
        ),
        material=material,
        size=size,
        style=rng.integers(0, len(STYLES), num_products, dtype=np.int16),
        price_band=rng.integers(0, len(PRICE_BANDS), num_products, dtype=np.int16),
    )


def _product_id(i: int) -> str:
    return f"p{i:07d}"


def _spelling(spellings: tuple[str, ...], u: float, p_variant: float) -> str:
    """The canonical spelling, or with probability ``p_variant`` one of the variants."""
    if len(spellings) == 1 or u >= p_variant:
        return spellings[0]
    return spellings[1 + int(u / p_variant * (len(spellings) - 1))]


def _cap(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


def render_products(
    catalog: CatalogArrays,
    start: int,
    stop: int,
    rng: np.random.Generator,
    profile: SimulatorProfile = PROFILES["standard"],
) -> pa.Table:
    """Listings for products ``start:stop`` (titles, descriptions, features, attributes)."""
    n = stop - start
    u = rng.random((n, 10))
    price_pos = rng.random(n)
    rows: dict[str, list[Any]] = {name: [] for name in storage.TABLES["products"].names}
    for j in range(n):
        i = start + j
        t = TYPES[catalog.product_type[i]]
        r = u[j]
        names = {
            "color": COLORS[catalog.color[i]],
            "material": ALL_MATERIALS[catalog.material[i]],
            "size": ALL_SIZES[catalog.size[i]],
            "style": STYLES[catalog.style[i]],
        }
        # Sellers mostly write canonical values; abbreviations are the exception.
        shown = [
            _spelling(names[a], r[k], profile.listing_attribute_variant)
            for k, a in enumerate(ATTRIBUTE_NAMES)
        ]
        shown = [shown[k] for k in _PERMUTATIONS[int(r[4] * len(_PERMUTATIONS))]]
        if r[5] < profile.title_drops_attribute:
            shown = shown[:-1]  # some titles leave one attribute to the description
        type_word = (
            t.name
            if r[6] < profile.listing_type_name_share
            else t.synonyms[int(r[6] * 97) % len(t.synonyms)]
        )
        brand = BRANDS[catalog.brand[i]]
        desc = [_cap(s) for s in shown]
        layout = int(r[7] * 4)
        if layout == 0:
            title = f"{brand} {' '.join(desc)} {_cap(type_word)}"
        elif layout == 1:
            title = f"{' '.join(desc[:2])} {_cap(type_word)}, {', '.join(desc[2:])} by {brand}"
        elif layout == 2:
            title = f"{brand} {_cap(type_word)} - {' - '.join(desc)}"
        else:
            marketing = MARKETING_WORDS[int(r[8] * len(MARKETING_WORDS))]
            title = f"{marketing} {' '.join(desc)} {_cap(type_word)} | {brand}"
        low, high = t.price
        band = int(catalog.price_band[i])
        price = low + (high - low) * (band + price_pos[j]) / len(PRICE_BANDS)
        color, material, size, style = (names[a][0] for a in ATTRIBUTE_NAMES)
        description = (
            f"This {style} {t.name} by {brand} comes in {color} {material}. "
            f"Size: {size}. A {PRICE_BANDS[band]} pick at ${price:,.0f}."
            if r[9] < 0.5
            else f"Bring {style} style home with the {brand} {type_word}. Crafted from "
            f"{material} in a {color} finish, {size}. Only ${price:,.0f}."
        )
        extras = [_FEATURE_EXTRAS[int(r[k] * len(_FEATURE_EXTRAS))] for k in (8, 9)]
        features = [
            f"Material: {material}",
            f"Color: {color}",
            f"Size: {size}",
            f"Style: {style}",
            *dict.fromkeys(extras),
        ]
        rows["product_id"].append(_product_id(i))
        rows["title"].append(title)
        rows["product_type"].append(t.name)
        rows["category"].append(FAMILIES[t.family])
        rows["brand"].append(brand)
        rows["attributes"].append(
            {
                "color": color,
                "material": material,
                "size": size,
                "style": style,
                "price_band": PRICE_BANDS[band],
            }
        )
        rows["description"].append(description)
        rows["features"].append(features)
    return pa.table(rows, schema=storage.TABLES["products"])


# ---------------------------------------------------------------------------- queries


def _keyboard_neighbours() -> dict[str, str]:
    """Each letter's right-hand neighbour on a QWERTY row (left-hand at the row's end)."""
    out = {}
    for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm"):
        for k, c in enumerate(row):
            out[c] = row[k + 1] if k + 1 < len(row) else row[k - 1]
    return out


_KEYBOARD_NEIGHBORS = _keyboard_neighbours()


def misspell(word: str, rng: np.random.Generator) -> str:
    """One typing slip: a dropped, doubled, swapped or neighbouring-key letter."""
    if len(word) < 4:
        return word + word[-1]
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return word[:i] + word[i + 1 :]
    if kind == 1:
        return word[:i] + word[i] + word[i:]
    if kind == 2:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + _KEYBOARD_NEIGHBORS.get(word[i], word[i]) + word[i + 1 :]


class _QueryWriter:
    def __init__(
        self,
        catalog: CatalogArrays,
        rng: np.random.Generator,
        lengths: dict[int, float],
        attribute_variant: float = 0.35,
    ) -> None:
        self.catalog = catalog
        self.rng = rng
        self.lengths = np.array(list(lengths)), np.array(list(lengths.values()))
        self.attribute_variant = attribute_variant

    def _pick(self, options: tuple[str, ...]) -> str:
        return _spelling(options, float(self.rng.random()), self.attribute_variant)

    def _num_attributes(self, low: int, high: int) -> int:
        words = int(self.rng.choice(self.lengths[0], p=self.lengths[1]))
        return int(np.clip(words - 1, low, high))

    def _attributes(
        self, anchor: int, k: int, names: tuple[str, ...] = ATTRIBUTE_NAMES
    ) -> dict[str, int]:
        chosen = self.rng.choice(len(names), size=min(k, len(names)), replace=False)
        return {names[c]: int(self.catalog.attribute(names[c])[anchor]) for c in sorted(chosen)}

    def _attribute_words(self, attrs: Mapping[str, int]) -> list[str]:
        return [self._pick(ATTRIBUTES[name][value]) for name, value in attrs.items()]

    def _type_word(self, t: int, synonym: bool) -> str:
        spec = TYPES[t]
        if synonym:
            return spec.synonyms[int(self.rng.integers(len(spec.synonyms)))]
        return spec.name + "s" if self.rng.random() < 0.25 else spec.name

    def write(self, anchor: int, query_type: str) -> _Query:
        t = int(self.catalog.product_type[anchor])
        brand = int(self.catalog.brand[anchor])
        brand_word = BRANDS[brand].lower()
        if self.rng.random() < 0.5:
            brand_word = brand_word.split()[0]
        rng = self.rng
        if query_type == "type_only":
            return _Query(self._type_word(t, False), query_type, QuerySpec(t), anchor)
        if query_type in ("type_attr", "synonym", "misspelling"):
            k = self._num_attributes(1, 3)
            if query_type == "synonym" and rng.random() < 0.4:
                k = 0
            attrs = self._attributes(anchor, k)
            type_word = self._type_word(t, query_type == "synonym")
            if query_type == "misspelling":
                # Shoppers slip most on the longest word.
                words = type_word.split()
                longest = max(range(len(words)), key=lambda i: len(words[i]))
                words[longest] = misspell(words[longest], rng)
                type_word = " ".join(words)
            words = self._attribute_words(attrs)
            if "size" in attrs and rng.random() < 0.5:
                size_word = words.pop(list(attrs).index("size"))
                text = " ".join([*words, type_word, size_word])
            else:
                text = " ".join([*words, type_word])
            return _Query(text, query_type, QuerySpec(t, -1, attrs), anchor)
        if query_type == "brand_type":
            type_word = self._type_word(t, rng.random() < 0.3)
            text = (
                f"{brand_word} {type_word}"
                if rng.random() < 0.7
                else (f"{type_word} by {brand_word}")
            )
            return _Query(text, query_type, QuerySpec(t, brand), anchor)
        if query_type == "attr_only":
            pairs = (("color", "material"), ("style", "material"), ("color", "style"))
            attrs = self._attributes(anchor, 2, pairs[int(rng.integers(len(pairs)))])
            return _Query(
                " ".join(self._attribute_words(attrs)), query_type, QuerySpec(-1, -1, attrs), anchor
            )
        if query_type == "long_tail":
            attrs = self._attributes(anchor, self._num_attributes(2, 3))
            with_brand = rng.random() < 0.5
            words = self._attribute_words(attrs)
            parts = [brand_word] if with_brand else []
            parts += [*words, self._type_word(t, rng.random() < 0.3)]
            parts.append(QUERY_SUFFIXES[int(rng.integers(len(QUERY_SUFFIXES)))])
            return _Query(
                " ".join(parts),
                query_type,
                QuerySpec(t, brand if with_brand else -1, attrs),
                anchor,
            )
        if query_type == "paraphrase":
            attrs = self._attributes(anchor, int(rng.integers(0, 2)))
            phrases = PARAPHRASES[TYPES[t].name]
            words = self._attribute_words(attrs)
            text = " ".join([*words, phrases[int(rng.integers(len(phrases)))]])
            return _Query(text, query_type, QuerySpec(t, -1, attrs), anchor)
        if query_type == "negation":
            # Exclude a value the anchor does not have, so the anchor stays an exact match.
            name = "material" if rng.random() < 0.6 else "color"
            values = type_material_ids(TYPES[t]) if name == "material" else np.arange(len(COLORS))
            values = values[values != self.catalog.attribute(name)[anchor]]
            excluded = int(values[int(rng.integers(len(values)))])
            template = _NEGATION_TEMPLATES[int(rng.integers(len(_NEGATION_TEMPLATES)))]
            value_word = self._pick(ATTRIBUTES[name][excluded])
            text = template.format(t=self._type_word(t, rng.random() < 0.3), v=value_word)
            return _Query(
                text, query_type, QuerySpec(t, excluded_attributes={name: excluded}), anchor
            )
        if query_type == "brand_substitute":
            template = _BRAND_SUBSTITUTE_TEMPLATES[
                int(rng.integers(len(_BRAND_SUBSTITUTE_TEMPLATES)))
            ]
            text = template.format(t=self._type_word(t, rng.random() < 0.3), b=brand_word)
            return _Query(text, query_type, QuerySpec(t, excluded_brand=brand), anchor)
        raise ValueError(f"unknown query_type {query_type!r}; known: {sorted(QUERY_TYPES)}")


def make_queries(
    catalog: CatalogArrays,
    count: int,
    rng: np.random.Generator,
    query_mix: Mapping[str, float],
    lengths: dict[int, float],
    attribute_variant: float = 0.35,
) -> list[_Query]:
    """``count`` queries with distinct normalized texts (fewer if the catalog is tiny)."""
    unknown = set(query_mix) - set(QUERY_TYPES)
    if unknown:
        raise ValueError(f"query_mix has unknown query types {sorted(unknown)}")
    kinds = list(query_mix)
    p = np.array([query_mix[k] for k in kinds], dtype=float)
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError("query_mix weights must be non-negative and not all zero")
    writer = _QueryWriter(catalog, rng, lengths, attribute_variant)
    queries: list[_Query] = []
    seen: set[str] = set()
    for _ in range(count * 20):
        if len(queries) == count:
            break
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        query = writer.write(int(rng.integers(len(catalog))), kind)
        key = re.sub(r"\W+", " ", query.text.lower()).strip()
        if key not in seen:
            seen.add(key)
            queries.append(query)
    return queries


# ---------------------------------------------------------------------------- pools


class _PoolBuilder:
    """Chooses the products to judge per query, touching only the relevant types."""

    def __init__(self, catalog: CatalogArrays, shape: PoolShape) -> None:
        self.catalog = catalog
        self.shape = shape
        order = np.argsort(catalog.product_type, kind="stable")
        bounds = np.searchsorted(catalog.product_type[order], np.arange(len(TYPES) + 1))
        self.by_type = [order[bounds[t] : bounds[t + 1]] for t in range(len(TYPES))]
        words = [set(" ".join((t.name, *t.synonyms)).split()) for t in TYPES]
        self.shares_words = [
            [o for o in range(len(TYPES)) if o != t and words[t] & words[o]]
            for t in range(len(TYPES))
        ]

    def _sample(self, rng: np.random.Generator, ids: np.ndarray, k: int) -> np.ndarray:
        if k <= 0 or len(ids) == 0:
            return ids[:0]
        return ids if len(ids) <= k else rng.choice(ids, size=k, replace=False)

    def _of_types(self, types: list[int]) -> np.ndarray:
        if not types:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([self.by_type[t] for t in types])

    def build(self, spec: QuerySpec, anchor: int, rng: np.random.Generator) -> np.ndarray:
        shape = self.shape
        parts = [np.array([anchor])]
        if spec.product_type >= 0:
            t = spec.product_type
            same = self.by_type[t]
            exact = judge(spec, self.catalog, same).grade == 3
            parts.append(self._sample(rng, same[exact], shape.exact))
            parts.append(self._sample(rng, same[~exact], shape.same_type))
            relation = RELATION[t]
            subs = [o for o in np.flatnonzero(relation == SUBSTITUTE) if o != t]
            comps = list(np.flatnonzero(relation == COMPLEMENT_REL))
            parts.append(self._sample(rng, self._of_types(subs), shape.substitute))
            parts.append(self._sample(rng, self._of_types(comps), shape.complement))
            lookalikes = [o for o in self.shares_words[t] if relation[o] == UNRELATED]
            parts.append(self._sample(rng, self._of_types(lookalikes), shape.shared_words))
        else:
            # No type asked: look for matches among a bounded random sample of the catalog.
            sample = self._sample(rng, np.arange(len(self.catalog)), 50_000)
            grade = judge(spec, self.catalog, sample).grade
            parts.append(self._sample(rng, sample[grade == 3], shape.exact + shape.same_type))
            parts.append(self._sample(rng, sample[grade == 2], shape.substitute + shape.complement))
        chosen = np.unique(np.concatenate(parts))
        want = shape.total - len(chosen)
        if want > 0:
            extra = rng.integers(0, len(self.catalog), size=want * 2)
            extra = np.setdiff1d(extra, chosen)[:want]
            chosen = np.concatenate([chosen, extra])
        return rng.permutation(chosen)


# ---------------------------------------------------------------------------- raters


def simulate_raters(
    grades: np.ndarray, raters: int, rater_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Votes [pairs, raters]: each rater keeps the rule grade or slips, mostly to a
    neighbouring grade. Raters differ in care and middle grades are harder to call."""
    if raters < 1:
        raise ValueError(f"raters must be at least 1, got {raters}")
    if not 0.0 <= rater_noise < 1.0:
        raise ValueError(f"rater_noise must be in [0, 1), got {rater_noise}")
    care = rng.uniform(0.5, 1.5, raters)
    difficulty = np.where((grades == 1) | (grades == 2), 1.3, 0.8)
    p_slip = np.clip(rater_noise * care[None, :] * difficulty[:, None], 0.0, 0.95)
    slip = rng.random(p_slip.shape) < p_slip
    step = np.where(rng.random(p_slip.shape) < 0.5, -1, 1)
    neighbour = grades[:, None] + step
    neighbour = np.where(
        (neighbour < 0) | (neighbour >= NUM_GRADES), grades[:, None] - step, neighbour
    )
    anywhere = (grades[:, None] + rng.integers(1, NUM_GRADES, p_slip.shape)) % NUM_GRADES
    wrong = np.where(rng.random(p_slip.shape) < 0.7, neighbour, anywhere)
    return np.where(slip, wrong, grades[:, None]).astype(np.int8)


def vote_shares(votes: np.ndarray) -> np.ndarray:
    counts = np.stack([(votes == g).sum(axis=1) for g in range(NUM_GRADES)], axis=1)
    return (counts / votes.shape[1]).astype(np.float32)


def majority_grade(shares: np.ndarray) -> np.ndarray:
    """The most voted grade; ties go to the grade nearest the mean vote."""
    mean = shares @ np.arange(NUM_GRADES)
    closeness = -np.abs(np.arange(NUM_GRADES)[None, :] - mean[:, None])
    return np.argmax(shares * 100 + closeness, axis=1).astype(np.int8)


def fleiss_kappa(shares: np.ndarray, raters: np.ndarray) -> float:
    """Fleiss' kappa of the raters' votes (vote shares and raters per pair)."""
    keep = raters > 1
    if not keep.any():
        return float("nan")
    n = raters[keep].astype(float)
    counts = shares[keep] * n[:, None]
    p_item = ((counts * (counts - 1)).sum(axis=1) / (n * (n - 1))).mean()
    p_grade = counts.sum(axis=0) / n.sum()
    p_chance = float((p_grade**2).sum())
    return float((p_item - p_chance) / (1 - p_chance)) if p_chance < 1 else 1.0


def judge_queries(
    queries: Sequence[_Query],
    query_ids: Sequence[str],
    catalog: CatalogArrays,
    pool: PoolShape,
    pool_rng: np.random.Generator,
    rater_rng: np.random.Generator,
    raters: int = 5,
    rater_noise: float = 0.15,
    global_rows: np.ndarray | None = None,
    on_query: Callable[[], None] | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """The judgments table of ``queries`` (a pool of ``catalog`` products each, graded by
    the rules and voted on by simulated raters) and the rule grades of its rows.

    ``global_rows`` maps a row of ``catalog`` to the product's row in the whole catalog
    its ids are numbered in, when ``catalog`` is a part of it (default: the same rows)."""
    builder = _PoolBuilder(catalog, pool)
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("q", "p", "grade", "cat", "brand", "attr")
    }
    for qi, query in enumerate(queries):
        idx = builder.build(query.spec, query.anchor, pool_rng)
        truth = judge(query.spec, catalog, idx)
        columns["q"].append(np.full(len(idx), qi))
        columns["p"].append(idx)
        columns["grade"].append(truth.grade)
        columns["cat"].append(truth.category_match)
        columns["brand"].append(truth.brand_match)
        columns["attr"].append(truth.attribute_match)
        if on_query is not None:
            on_query()
    flat = {k: np.concatenate(v) for k, v in columns.items()}
    votes = simulate_raters(flat["grade"], raters, rater_noise, rater_rng)
    shares = vote_shares(votes)
    hard = majority_grade(shares)
    rows = flat["p"] if global_rows is None else global_rows[flat["p"]]
    table = pa.table(
        {
            "query_id": [query_ids[q] for q in flat["q"]],
            "product_id": [_product_id(int(p)) for p in rows],
            "grade": hard,
            "grade_probs": pa.FixedSizeListArray.from_arrays(shares.reshape(-1), NUM_GRADES),
            "num_raters": np.full(len(hard), raters, dtype=np.int16),
            "category_match": flat["cat"],
            "brand_match": flat["brand"],
            "attribute_match": flat["attr"],
        }
    )
    return table, flat["grade"]


# ---------------------------------------------------------------------------- main


def simulate(
    out_dir: Path | str,
    num_products: int = 3000,
    num_queries: int = 400,
    seed: int = 0,
    raters: int = 5,
    rater_noise: float = 0.15,
    num_unlabeled: int | None = None,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    query_mix: Mapping[str, float] | None = None,
    pool: PoolShape | None = None,
    shard_size: int = 200_000,
    show_progress: bool = True,
    profile: str = "standard",
) -> Path:
    """Write a simulated dataset to ``out_dir`` and return it.

    ``num_queries`` labeled queries are split by query into train/dev/test with
    ``split_fractions``; ``num_unlabeled`` more (default: as many) form the unlabeled
    pool for augmentation. ``rater_noise`` is the typical chance one rater's vote
    differs from the rule grade. ``profile`` names a ``PROFILES`` entry (difficulty);
    ``query_mix`` and ``pool``, when given, override the profile's.
    """
    if num_products < 10:
        raise ValueError(f"num_products must be at least 10, got {num_products}")
    if num_queries < 3:
        raise ValueError(f"num_queries must be at least 3 (one per split), got {num_queries}")
    if len(split_fractions) != 3 or min(split_fractions) <= 0:
        raise ValueError(f"split_fractions must be three positive numbers, got {split_fractions}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    knobs = PROFILES[profile]
    query_mix = query_mix or knobs.query_mix
    num_unlabeled = num_queries if num_unlabeled is None else num_unlabeled
    pool = pool or knobs.pool
    out = Path(out_dir)
    for name in storage.TABLES:
        storage.clear_table(out, name)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    catalog = make_catalog(num_products, rng, knobs.type_popularity_zipf)
    lengths = _query_lengths(DataSettings().wands_queries)

    with Progress(disable=not show_progress) as progress:
        task = progress.add_task("listings", total=num_products)
        text_rng = np.random.default_rng([seed, 1])
        for start in range(0, num_products, shard_size):
            stop = min(start + shard_size, num_products)
            storage.append_shard(
                out, "products", render_products(catalog, start, stop, text_rng, knobs)
            )
            progress.update(task, completed=stop)

        query_rng = np.random.default_rng([seed, 2])
        queries = make_queries(
            catalog,
            num_queries + num_unlabeled,
            query_rng,
            query_mix,
            lengths,
            knobs.query_attribute_variant,
        )
        if len(queries) < num_queries:
            raise ValueError(
                f"catalog of {num_products} products yields only {len(queries)} "
                f"distinct queries; ask for fewer or add products"
            )
        labeled, unlabeled = queries[:num_queries], queries[num_queries:]
        fractions = np.array(split_fractions) / sum(split_fractions)
        cuts = np.maximum(np.round(np.cumsum(fractions)[:2] * num_queries).astype(int), [1, 2])
        order = query_rng.permutation(num_queries)
        splits = np.empty(num_queries, dtype=object)
        splits[order[: cuts[0]]] = Split.TRAIN
        splits[order[cuts[0] : cuts[1]]] = Split.DEV
        splits[order[cuts[1] :]] = Split.TEST
        query_ids = [f"q{i:06d}" for i in range(len(queries))]
        storage.write_table(
            out,
            "queries",
            pa.table(
                {
                    "query_id": query_ids,
                    "query": [q.text for q in queries],
                    "query_type": [q.query_type for q in queries],
                    "split": [*splits.tolist(), *[Split.UNLABELED] * len(unlabeled)],
                }
            ),
        )

        task = progress.add_task("judgments", total=num_queries)
        judgments, rule_grades = judge_queries(
            labeled,
            query_ids,
            catalog,
            pool,
            pool_rng=np.random.default_rng([seed, 3]),
            rater_rng=np.random.default_rng([seed, 4]),
            raters=raters,
            rater_noise=rater_noise,
            on_query=lambda: progress.update(task, advance=1),
        )
        hard = judgments.column("grade").to_numpy()
        storage.write_table(out, "judgments", judgments)

    storage.write_manifest(
        out,
        source="simulator",
        seed=seed,
        extra={
            "num_products": num_products,
            "num_queries": num_queries,
            "num_unlabeled": len(unlabeled),
            "raters": raters,
            "rater_noise": rater_noise,
            "split_fractions": list(split_fractions),
            "profile": profile,
            "query_mix": dict(query_mix),
            "query_lengths": {str(k): v for k, v in lengths.items()},
            # Only the simulator knows the rule grade; this is how often raters recover it.
            "majority_matches_rules": float((hard == rule_grades).mean()),
            "rule_grade_counts": {str(g): int((rule_grades == g).sum()) for g in range(NUM_GRADES)},
        },
    )
    return out
