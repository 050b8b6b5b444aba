"""Query sources for augmentation: a query log, the simulator's unlabeled pool, synthetic queries.

Synthetic queries exist to reach products that no logged query retrieves: they are
written from a product's own fields (attribute sampling) in a shopper's phrasing
("navy wool rug", "acme sofa", "oak dining table with drawers").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contracts.schema import Split
from contracts.text import attribute_pairs, normalize_query, query_id_for
from services.candidate_generation.index import CatalogIndex
from training.data import storage

LOG, SIMULATOR, SYNTHETIC, RELABEL = "log", "simulator", "synthetic", "relabel"
# A query whose pair student and teacher dispute (the disagreement monitor's requests).
DISAGREEMENT = "disagreement"


@dataclass(frozen=True)
class QueryRecord:
    query_id: str
    query: str
    # Where the query came from (CandidateBatch.source): log, simulator, synthetic, relabel.
    source: str


def dedupe(records: Iterable[QueryRecord]) -> list[QueryRecord]:
    """First occurrence wins, by query id and by normalised text."""
    seen: set[str] = set()
    out: list[QueryRecord] = []
    for record in records:
        keys = {record.query_id, normalize_query(record.query)}
        if keys & seen:
            continue
        seen |= keys
        out.append(record)
    return out


def read_query_log(path: str | Path) -> list[QueryRecord]:
    """Queries from a log: JSON Lines with `query` (optional `query_id`), or one query a line."""
    path = Path(path)
    records: list[QueryRecord] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
                query = entry.get("query") if isinstance(entry, dict) else None
                if not isinstance(query, str) or not query.strip():
                    raise ValueError(f"{path}:{number}: field 'query' must be a non-empty string")
                query_id = entry.get("query_id") or query_id_for(query)
            else:
                query, query_id = line, query_id_for(line)
            records.append(QueryRecord(str(query_id), query.strip(), LOG))
    return dedupe(records)


def simulator_queries(
    dataset_dir: str | Path, splits: Sequence[str] = (Split.UNLABELED,)
) -> list[QueryRecord]:
    """The dataset's queries of the given splits (by default the unlabeled augmentation pool)."""
    unknown = [s for s in splits if s not in Split.ALL]
    if unknown:
        raise ValueError(f"splits: unknown {unknown}; choose from {Split.ALL}")
    records: list[QueryRecord] = []
    for split in splits:
        table = storage.read_table(
            dataset_dir, "queries", ["query_id", "query"], filter_split=split
        )
        records += [
            QueryRecord(q, text, SIMULATOR)
            for q, text in zip(
                table["query_id"].to_pylist(), table["query"].to_pylist(), strict=True
            )
        ]
    return dedupe(records)


# Shopper phrasings; {attrs} is 0-2 sampled attribute values, {type} the product type.
TEMPLATES = (
    "{attrs} {type}",
    "{brand} {type}",
    "{brand} {attrs} {type}",
    "{type} {attrs}",
    "{attrs} {types}",
    "{type} in {attr}",
    "best {attrs} {type}",
    "cheap {type}",
)
# Attribute values longer than this read like specs, not like something typed in a search box.
MAX_ATTRIBUTE_WORDS = 3


def _plural(noun: str) -> str:
    return noun if noun.endswith("s") else noun + "s"


def synthetic_query(product: Mapping[str, Any], rng: np.random.Generator) -> str:
    """One shopper-style query written from a product's fields."""
    ptype = (product.get("product_type") or "").strip()
    if not ptype:
        # No type: the title's last two words are usually its head noun phrase.
        ptype = " ".join(str(product.get("title") or "").split()[-2:])
    values = [
        v
        for _, v in attribute_pairs(product.get("attributes"))
        if len(v.split()) <= MAX_ATTRIBUTE_WORDS
    ]
    brand = (product.get("brand") or "").strip()
    templates = [
        t for t in TEMPLATES if ("{brand}" not in t or brand) and ("{attr}" not in t or values)
    ]
    template = templates[rng.integers(len(templates))]
    picked = (
        rng.choice(values, size=min(len(values), int(rng.integers(1, 3))), replace=False)
        if values
        else []
    )
    query = template.format(
        type=ptype,
        types=_plural(ptype),
        brand=brand,
        attrs=" ".join(picked),
        attr=picked[0] if len(picked) else "",
    )
    return normalize_query(query)


def synthetic_queries(
    products: Sequence[Mapping[str, Any]], per_product: int = 1, seed: int = 0
) -> list[QueryRecord]:
    """`per_product` synthetic queries for each product, de-duplicated across products."""
    if per_product < 1:
        raise ValueError(f"per_product: must be at least 1, got {per_product}")
    rng = np.random.default_rng(seed)
    records = [
        QueryRecord(query_id_for(text), text, SYNTHETIC)
        for product in products
        for text in (synthetic_query(product, rng) for _ in range(per_product))
    ]
    return dedupe(records)


def unreached_products(
    index: CatalogIndex, queries: Sequence[QueryRecord], depth: int = 100, batch_size: int = 256
) -> list[str]:
    """Products in no query's fused top-`depth`: the ones synthetic queries should target."""
    reached: set[str] = set()
    for start in range(0, len(queries), batch_size):
        chunk = [q.query for q in queries[start : start + batch_size]]
        for ranking in index.search_batch(chunk, depth):
            reached.update(h.product_id for h in ranking)
    return [pid for pid in index.product_ids() if pid not in reached]
