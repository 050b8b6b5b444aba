"""Spectrum sampling: per query, candidates from every part of the relevance spectrum.

Margin-MSE learns from *differences* between products of the same query, so a
query's candidates must span the spectrum: the head of the fused ranking (mostly
Exact/Substitute), deeper ranks sampled in log-spaced strata (near misses,
complements), and uniformly random catalog products (clear negatives). All of a
query's candidates are returned together so they travel as one CandidateBatch.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.topics import pair_key
from services.candidate_generation.index import CatalogIndex, Hit

TOP, STRATIFIED, RANDOM = "top", "stratified", "random"


@dataclass(frozen=True)
class SamplingConfig:
    """How a query's `per_query` candidates split across the spectrum."""

    per_query: int = 32
    top_fraction: float = 0.4
    random_fraction: float = 0.2
    # Fused-ranking depth the stratified part draws from.
    depth: int = 1000
    num_strata: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.per_query <= 1000:
            raise ValueError(f"per_query: must be in 1..1000, got {self.per_query}")
        for name in ("top_fraction", "random_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.top_fraction + self.random_fraction > 1.0:
            raise ValueError("top_fraction + random_fraction: must not exceed 1")
        if self.depth < self.per_query:
            raise ValueError(
                f"depth: must be at least per_query ({self.per_query}), got {self.depth}"
            )
        if self.num_strata < 1:
            raise ValueError(f"num_strata: must be at least 1, got {self.num_strata}")

    @property
    def num_top(self) -> int:
        return max(1, round(self.per_query * self.top_fraction)) if self.top_fraction else 0

    @property
    def num_random(self) -> int:
        return min(self.per_query - self.num_top, round(self.per_query * self.random_fraction))

    @property
    def num_stratified(self) -> int:
        return self.per_query - self.num_top - self.num_random


@dataclass(frozen=True)
class Candidate:
    """A sampled product; `rank` is its 1-based fused rank, 0 for a random pick."""

    product_id: str
    row: int
    score: float
    rank: int
    stratum: str


def load_labeled_pairs(path: str | Path, teacher_version: str) -> set[str]:
    """Pair keys (topics.pair_key) the given teacher version already labeled.

    `path` is a teacher_labels Parquet file or directory (schema.TEACHER_LABELS).
    """
    table = pq.read_table(path, columns=["query_id", "product_id", "teacher_version"])
    table = table.filter(pc.equal(table["teacher_version"], teacher_version))
    return {
        pair_key(q, p)
        for q, p in zip(table["query_id"].to_pylist(), table["product_id"].to_pylist(), strict=True)
    }


def _query_rng(seed: int, query_id: str) -> np.random.Generator:
    # Seeded by the query id, so a rerun of the same query samples the same products.
    digest = int.from_bytes(hashlib.sha256(query_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def strata_bounds(start: int, end: int, num_strata: int) -> list[tuple[int, int]]:
    """Log-spaced [lo, hi) slices of positions start..end: shallow ranks get finer strata."""
    if end <= start:
        return []
    edges = np.unique(np.geomspace(start + 1, end + 1, num_strata + 1).round().astype(int) - 1)
    return [(int(lo), int(hi)) for lo, hi in itertools.pairwise(edges) if hi > lo]


class SpectrumSampler:
    """Samples candidates for queries from a CatalogIndex, skipping already-labeled pairs."""

    def __init__(
        self,
        index: CatalogIndex,
        config: SamplingConfig | None = None,
        labeled: Collection[str] = frozenset(),
    ) -> None:
        self.index = index
        self.config = config or SamplingConfig()
        self.labeled = labeled

    def sample_queries(
        self, query_ids: Sequence[str], queries: Sequence[str]
    ) -> list[list[Candidate]]:
        """Candidates for each query (one fused search for the whole batch)."""
        if len(query_ids) != len(queries):
            raise ValueError("query_ids: must be as many as queries")
        rankings = self.index.search_batch(queries, self.config.depth)
        return [self.sample(q, r) for q, r in zip(query_ids, rankings, strict=True)]

    def sample(self, query_id: str, ranking: Sequence[Hit]) -> list[Candidate]:
        """Candidates of one query from its fused ranking (best first)."""
        config = self.config
        rng = _query_rng(config.seed, query_id)
        fresh = [h for h in ranking if pair_key(query_id, h.product_id) not in self.labeled]
        picked = [
            Candidate(h.product_id, h.row, h.score, h.rank, TOP) for h in fresh[: config.num_top]
        ]
        picked += self._stratified(fresh, len(picked), config.num_stratified, rng)
        # Random negatives also make up for strata too thin to fill their share.
        picked += self._random(query_id, picked, config.per_query - len(picked), rng)
        return picked

    def _stratified(
        self, fresh: Sequence[Hit], start: int, wanted: int, rng: np.random.Generator
    ) -> list[Candidate]:
        bounds = strata_bounds(start, len(fresh), self.config.num_strata)
        picked: list[Candidate] = []
        for i, (lo, hi) in enumerate(bounds):
            # Spread what is still wanted evenly over the strata that remain.
            share = -(-(wanted - len(picked)) // (len(bounds) - i))
            positions = rng.choice(np.arange(lo, hi), size=min(share, hi - lo), replace=False)
            for position in sorted(positions):
                hit = fresh[position]
                picked.append(Candidate(hit.product_id, hit.row, hit.score, hit.rank, STRATIFIED))
        return picked

    def _random(
        self, query_id: str, picked: Sequence[Candidate], wanted: int, rng: np.random.Generator
    ) -> list[Candidate]:
        if wanted <= 0:
            return []
        taken = {c.product_id for c in picked}
        rows = self.index.alive_rows()
        order = rng.permutation(len(rows))
        chosen: list[Candidate] = []
        # Walk a random permutation lazily: a 100k catalog needs only a few products.
        for start in range(0, len(order), 4 * wanted):
            block = rows[order[start : start + 4 * wanted]]
            for row, product_id in zip(block, self.index.product_ids_at(block), strict=True):
                if product_id in taken or pair_key(query_id, product_id) in self.labeled:
                    continue
                taken.add(product_id)
                chosen.append(Candidate(product_id, int(row), 0.0, 0, RANDOM))
                if len(chosen) == wanted:
                    return chosen
        return chosen
