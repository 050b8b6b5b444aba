"""The relabel backlog: pairs a new teacher version must label again, drained under a budget.

A ``teacher_changed`` request queues every pair the label store holds under an older
teacher version. The backlog is a sqlite file in the candidate state directory, so
a restarted service resumes where it stopped. It is drained into
``relevance.candidates.v1`` at most ``requeue_pairs_per_hour`` pairs in any hour
(a sliding window over the publication times it records), most valuable first:

1. pairs the student serves most (counted from ``relevance.served.v1`` samples);
2. then pairs whose current label is nearest a grade boundary (an expected grade
   near 0.5, 1.5 or 2.5), where a new teacher is most likely to change the grade.

A drained pair is marked published only after the broker acknowledged its batch,
so a crash republishes at most the last drain (labels are idempotent per pair and
teacher version) and never loses one.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
from prometheus_client import Counter, Gauge

from contracts.schema import NUM_GRADES
from contracts.topics import CANDIDATES
from services.candidate_generation.batch import candidate_batch
from services.candidate_generation.index import CatalogIndex
from services.candidate_generation.queries import QueryRecord
from services.candidate_generation.sampling import Candidate
from services.core.bus import Publisher
from services.label_store.store import LabelStore, SnapshotNotFound

log = logging.getLogger(__name__)

BACKLOG_FILE = "relabel-backlog.sqlite"
# CandidateBatch.source (and Candidate.stratum) of re-queued pairs.
REQUEUE = "teacher_changed"
HOUR_S = 3600.0
# Expected grades halfway between two grades: where the rounded grade flips.
GRADE_BOUNDARIES = tuple(g + 0.5 for g in range(NUM_GRADES - 1))

BACKLOG_PAIRS = Gauge(
    "relkd_relabel_backlog_pairs",
    "Pairs queued for relabeling by a teacher version, by state (pending, requeued, missing).",
    ["teacher_version", "state"],
)
REQUEUED = Counter(
    "relkd_relabel_requeued_pairs_total", "Stale pairs re-published for a new teacher."
)


@dataclass(frozen=True)
class StalePair:
    """A pair whose current label came from another teacher version."""

    query_id: str
    query: str
    product_id: str
    # The current label's expected grade, in [0, NUM_GRADES - 1].
    expected_score: float


@dataclass(frozen=True)
class VersionProgress:
    teacher_version: str
    queued: int
    requeued: int
    # Pairs whose product is no longer in the catalog index (nothing to relabel).
    missing: int

    @property
    def pending(self) -> int:
        return self.queued - self.requeued - self.missing


def boundary_distance(expected_score: float) -> float:
    return min(abs(expected_score - b) for b in GRADE_BOUNDARIES)


class RelabelBacklog:
    """The queued pairs per teacher version and the served-pair counts, in one sqlite file."""

    def __init__(self, path: str | Path, pairs_per_hour: int) -> None:
        if pairs_per_hour < 1:
            raise ValueError(f"requeue_pairs_per_hour: must be at least 1, got {pairs_per_hour}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.pairs_per_hour = pairs_per_hour
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS backlog (
                    teacher_version TEXT NOT NULL,
                    query_id TEXT NOT NULL,
                    product_id TEXT NOT NULL,
                    query TEXT NOT NULL,
                    boundary_distance REAL NOT NULL,
                    queued_at REAL NOT NULL,
                    -- 'pending', 'requeued' or 'missing'
                    state TEXT NOT NULL DEFAULT 'pending',
                    done_at REAL,
                    PRIMARY KEY (teacher_version, query_id, product_id)
                );
                CREATE INDEX IF NOT EXISTS backlog_done ON backlog (done_at);
                CREATE TABLE IF NOT EXISTS served (
                    query_id TEXT NOT NULL,
                    product_id TEXT NOT NULL,
                    count INTEGER NOT NULL,
                    PRIMARY KEY (query_id, product_id)
                );
                """
            )

    def enqueue(self, teacher_version: str, pairs: Iterable[StalePair]) -> int:
        """Queues pairs for `teacher_version`; returns how many were not queued already."""
        now = time.time()
        rows = [
            (
                teacher_version,
                p.query_id,
                p.product_id,
                p.query,
                boundary_distance(p.expected_score),
                now,
            )
            for p in pairs
        ]
        with self._lock, self._db:
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO backlog (teacher_version, query_id, product_id, query, "
                "boundary_distance, queued_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            added = self._db.total_changes - before
        self._refresh_gauges()
        return added

    def record_served(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Counts served (query_id, product_id) pairs: the first priority of the drain."""
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for pair in pairs:
            counts[pair] += 1
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO served (query_id, product_id, count) VALUES (?, ?, ?) "
                "ON CONFLICT (query_id, product_id) DO UPDATE SET count = count + excluded.count",
                [(q, p, n) for (q, p), n in counts.items()],
            )

    def budget_left(self, now: float | None = None) -> int:
        """Pairs the drain may still publish in the hour ending now."""
        now = time.time() if now is None else now
        with self._lock:
            (spent,) = self._db.execute(
                "SELECT COUNT(*) FROM backlog WHERE state = 'requeued' AND done_at > ?",
                (now - HOUR_S,),
            ).fetchone()
        return max(self.pairs_per_hour - spent, 0)

    def next_pairs(self, limit: int) -> list[tuple[str, StalePair]]:
        """Up to `limit` pending (teacher_version, pair)s, most served, then nearest a boundary."""
        if limit <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT b.teacher_version, b.query_id, b.query, b.product_id, b.boundary_distance "
                "FROM backlog b LEFT JOIN served s "
                "ON s.query_id = b.query_id AND s.product_id = b.product_id "
                "WHERE b.state = 'pending' "
                "ORDER BY COALESCE(s.count, 0) DESC, b.boundary_distance ASC, b.queued_at ASC "
                "LIMIT ?",
                (limit,),
            ).fetchall()
        return [(v, StalePair(q, text, p, d)) for v, q, text, p, d in rows]

    def mark(self, teacher_version: str, pairs: Sequence[StalePair], state: str) -> None:
        """Records pairs as 'requeued' (published and acknowledged) or 'missing'."""
        if state not in ("requeued", "missing"):
            raise ValueError(f"state: expected 'requeued' or 'missing', got {state!r}")
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE backlog SET state = ?, done_at = ? "
                "WHERE teacher_version = ? AND query_id = ? AND product_id = ?",
                [(state, now, teacher_version, p.query_id, p.product_id) for p in pairs],
            )
        self._refresh_gauges()

    def progress(self) -> list[VersionProgress]:
        """Per teacher version: pairs queued, requeued and missing, oldest version first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT teacher_version, COUNT(*), SUM(state = 'requeued'), SUM(state = 'missing') "
                "FROM backlog GROUP BY teacher_version ORDER BY MIN(queued_at)"
            ).fetchall()
        return [VersionProgress(v, n, int(r or 0), int(m or 0)) for v, n, r, m in rows]

    def _refresh_gauges(self) -> None:
        for p in self.progress():
            BACKLOG_PAIRS.labels(p.teacher_version, "pending").set(p.pending)
            BACKLOG_PAIRS.labels(p.teacher_version, "requeued").set(p.requeued)
            BACKLOG_PAIRS.labels(p.teacher_version, "missing").set(p.missing)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class LabelSource(Protocol):
    """Where teacher_changed finds the pairs labeled so far (the label store)."""

    def stale_pairs(self, teacher_version: str) -> list[StalePair]: ...


class LabelStoreLabels:
    """The label store's newest snapshot (``services.label_store.store``)."""

    def __init__(self, store: LabelStore) -> None:
        self.store = store

    def stale_pairs(self, teacher_version: str) -> list[StalePair]:
        try:
            snapshot = self.store.open()
        except SnapshotNotFound:
            log.warning("label store has no snapshot yet", extra={"dir": str(self.store.root)})
            return []
        return pairs_of(snapshot.stale_pairs(teacher_version))


def pairs_of(labels: pa.Table) -> list[StalePair]:
    """Rows of a teacher_labels table (schema.TEACHER_LABELS) as stale pairs."""
    columns = labels.select(["query_id", "query", "product_id", "expected_score"]).to_pydict()
    return [
        StalePair(q, text, p, float(s))
        for q, text, p, s in zip(
            columns["query_id"],
            columns["query"],
            columns["product_id"],
            columns["expected_score"],
            strict=True,
        )
    ]


class RequeueDrain:
    """Publishes the backlog's next pairs, within the budget, as candidate batches."""

    def __init__(
        self,
        backlog: RelabelBacklog,
        index: Callable[[], CatalogIndex],
        publisher: Publisher,
    ) -> None:
        self.backlog = backlog
        self.index = index
        self.publisher = publisher
        self._lock = threading.Lock()

    def drain_once(self) -> int:
        """Publishes what the budget allows now; returns the pairs requeued."""
        with self._lock:
            chosen = self.backlog.next_pairs(self.backlog.budget_left())
            if not chosen:
                return 0
            index = self.index()
            by_query: dict[tuple[str, str], list[StalePair]] = defaultdict(list)
            missing: dict[str, list[StalePair]] = defaultdict(list)
            for version, pair in chosen:
                if pair.product_id in index:
                    by_query[(version, pair.query_id)].append(pair)
                else:
                    missing[version].append(pair)
            for (_, query_id), pairs in by_query.items():
                query = QueryRecord(query_id, pairs[0].query, REQUEUE)
                candidates = [
                    Candidate(p.product_id, index.row_of(p.product_id), 0.0, 0, REQUEUE)
                    for p in pairs
                ]
                self.publisher.publish(
                    CANDIDATES, query_id, candidate_batch(index, query, candidates, index.version)
                )
            # Only pairs the broker acknowledged count as requeued.
            self.publisher.flush()
            requeued: dict[str, list[StalePair]] = defaultdict(list)
            for (version, _), pairs in by_query.items():
                requeued[version].extend(pairs)
            for version, pairs in requeued.items():
                self.backlog.mark(version, pairs, "requeued")
            for version, pairs in missing.items():
                self.backlog.mark(version, pairs, "missing")
            count = sum(len(p) for p in requeued.values())
            REQUEUED.inc(count)
            return count

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Drains every `interval_s` until `stop` is set; a failed drain is retried next time."""
        while not stop.wait(interval_s):
            try:
                self.drain_once()
            except Exception:
                log.exception("relabel backlog drain failed; retrying")
