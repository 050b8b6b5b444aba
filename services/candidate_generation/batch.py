"""Batch augmentation runs: sample candidates for many queries and publish them to Kafka.

A run is resumable: a sqlite ledger in the state directory records every
(query_id, index_version) whose CandidateBatch was acknowledged by the broker, and
a rerun skips those. Ledger rows are written only after :meth:`Publisher.flush`
returned, so a crash can at worst republish the last unflushed chunk (at least
once), never lose one.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from google.protobuf.message import Message
from relevance.v1 import topics_pb2
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from contracts.products import product_message
from contracts.topics import CANDIDATES, Topic
from services.candidate_generation.index import CatalogIndex
from services.candidate_generation.queries import (
    QueryRecord,
    dedupe,
    synthetic_queries,
    unreached_products,
)
from services.candidate_generation.sampling import Candidate, SpectrumSampler
from services.core.bus import event_meta
from services.core.rate import RateLimiter

PRODUCER = "candidate-generation"


class BatchSink(Protocol):
    """Where a batch run sends its CandidateBatches: Kafka (``bus.Publisher``) or a file
    (``contracts.candidates.CandidateFile``); ``flush`` returns once all sent are durable."""

    def publish(self, topic: Topic, key: str, message: Message) -> None: ...

    def flush(self) -> None: ...


def candidate_batch(
    index: CatalogIndex, query: QueryRecord, candidates: Sequence[Candidate], index_version: str
) -> topics_pb2.CandidateBatch:
    products = index.products_at([c.row for c in candidates])
    return topics_pb2.CandidateBatch(
        meta=event_meta(PRODUCER),
        query_id=query.query_id,
        query=query.query,
        products=[product_message(p) for p in products],
        source=query.source,
        index_version=index_version,
    )


class Ledger:
    """The (query_id, index_version) pairs already published, in a sqlite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS published ("
                " query_id TEXT NOT NULL, index_version TEXT NOT NULL, pairs INTEGER NOT NULL,"
                " published_at REAL NOT NULL, PRIMARY KEY (query_id, index_version))"
            )

    def published(self, index_version: str) -> set[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT query_id FROM published WHERE index_version = ?", (index_version,)
            )
            return {row[0] for row in rows}

    def pairs_by_query(self, index_version: str) -> dict[str, int]:
        """Candidate pairs published per query for `index_version`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT query_id, pairs FROM published WHERE index_version = ?", (index_version,)
            )
            return {row[0]: row[1] for row in rows}

    def record(self, index_version: str, pairs_by_query: Mapping[str, int]) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO published VALUES (?, ?, ?, ?)",
                [(q, index_version, n, now) for q, n in pairs_by_query.items()],
            )

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class BatchReport:
    index_version: str
    queries_selected: int
    queries_skipped: int
    queries_published: int
    pairs_published: int
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_published / self.seconds if self.seconds > 0 else 0.0


def select_queries(
    index: CatalogIndex,
    pool: Sequence[QueryRecord],
    count: int,
    synthetic: bool = True,
    seed: int = 0,
    coverage_depth: int = 100,
) -> list[QueryRecord]:
    """`count` queries: the pool first, then synthetic ones for products the pool does not reach.

    Deterministic for a given index, pool and seed, so a rerun selects the same queries.
    """
    if count < 1:
        raise ValueError(f"queries: must be at least 1, got {count}")
    selected = dedupe(pool)[:count]
    if len(selected) >= count or not synthetic:
        return selected
    rng = np.random.default_rng(seed)
    unreached = set(unreached_products(index, selected, coverage_depth)) if selected else set()
    all_ids = index.product_ids()
    # Products no pool query reaches come first; the rest of the catalog only tops up.
    order = [p for p in rng.permutation(all_ids) if p in unreached] + [
        p for p in rng.permutation(all_ids) if p not in unreached
    ]
    rows = index.alive_rows()
    row_of = dict(zip(index.product_ids_at(rows), rows, strict=True))
    chunk = max(count - len(selected), 64)
    for start in range(0, len(order), chunk):
        products = index.products_at([row_of[p] for p in order[start : start + chunk]])
        selected = dedupe([*selected, *synthetic_queries(products, seed=seed + start)])
        if len(selected) >= count:
            break
    return selected[:count]


def run_batch(
    index: CatalogIndex,
    sampler: SpectrumSampler,
    queries: Sequence[QueryRecord],
    publisher: BatchSink,
    ledger: Ledger,
    pairs_per_second: float | None = None,
    chunk_size: int = 64,
    progress: bool = True,
) -> BatchReport:
    """Samples and publishes one CandidateBatch per query not yet published for this index."""
    version = index.version
    done = ledger.published(version)
    todo = [q for q in queries if q.query_id not in done]
    limiter = RateLimiter(pairs_per_second)
    published = pairs = 0
    start = time.perf_counter()
    columns = (
        TextColumn("[bold]candidates"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[pairs]} pairs"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("publish", total=len(todo), pairs=0)
        for offset in range(0, len(todo), chunk_size):
            chunk = todo[offset : offset + chunk_size]
            sampled = sampler.sample_queries([q.query_id for q in chunk], [q.query for q in chunk])
            sent: dict[str, int] = {}
            for query, candidates in zip(chunk, sampled, strict=True):
                if not candidates:
                    continue
                limiter.acquire(len(candidates))
                publisher.publish(
                    CANDIDATES, query.query_id, candidate_batch(index, query, candidates, version)
                )
                sent[query.query_id] = len(candidates)
            publisher.flush()
            ledger.record(version, sent)
            published += len(sent)
            pairs += sum(sent.values())
            bar.update(task, advance=len(chunk), pairs=pairs)
    return BatchReport(
        index_version=version,
        queries_selected=len(queries),
        queries_skipped=len(queries) - len(todo),
        queries_published=published,
        pairs_published=pairs,
        seconds=time.perf_counter() - start,
    )
