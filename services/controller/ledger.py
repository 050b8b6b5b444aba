"""The ledger: one row per controller round (SQLite by default), read by `relkd loop status`.

A round records what it trained on (snapshot id, label counts by source), every gate
metric with its confidence interval, latencies, the decision and why, and the model
versions involved. Rows are appended once a round ends and never rewritten; a rollback
is a round of its own (decision ``rolled_back``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Decision(StrEnum):
    PROMOTED = "promoted"
    REFUSED = "refused"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


@dataclass(frozen=True)
class Metric:
    """A metric's value with its bootstrap confidence interval (None: not bootstrapped)."""

    value: float
    ci95: tuple[float, float] | None = None


@dataclass
class RoundRecord:
    round: int
    started_at: str
    finished_at: str
    snapshot: str | None
    decision: Decision
    reason: str
    label_counts: dict[str, int] = field(default_factory=dict)
    # "candidate.ndcg@10", "serving.ndcg@10", "delta.ndcg@10", "int8.spearman", ...
    metrics: dict[str, Metric] = field(default_factory=dict)
    candidate_p99_ms: float | None = None
    serving_p99_ms: float | None = None
    candidate_version: str | None = None
    serving_version: str | None = None  # serving when the round started
    candidate_checkpoint: str | None = None
    serving_checkpoint: str | None = None
    train_steps: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["decision"] = str(self.decision)
        out["metrics"] = {
            name: {"value": m.value, "ci95": list(m.ci95) if m.ci95 else None}
            for name, m in self.metrics.items()
        }
        return out


_COLUMNS = (
    "round",
    "started_at",
    "finished_at",
    "snapshot",
    "decision",
    "reason",
    "label_counts",
    "metrics",
    "candidate_p99_ms",
    "serving_p99_ms",
    "candidate_version",
    "serving_version",
    "candidate_checkpoint",
    "serving_checkpoint",
    "train_steps",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    snapshot TEXT,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    label_counts TEXT NOT NULL,
    metrics TEXT NOT NULL,
    candidate_p99_ms REAL,
    serving_p99_ms REAL,
    candidate_version TEXT,
    serving_version TEXT,
    candidate_checkpoint TEXT,
    serving_checkpoint TEXT,
    train_steps INTEGER
)
"""


class Ledger:
    """The rounds of one controller, in a SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def next_round(self) -> int:
        with self._connect() as db:
            (last,) = db.execute("SELECT MAX(round) FROM rounds").fetchone()
        return 1 if last is None else last + 1

    def append(self, record: RoundRecord) -> None:
        row = record.to_json()
        values = [row[c] for c in _COLUMNS]
        values[_COLUMNS.index("label_counts")] = json.dumps(row["label_counts"], sort_keys=True)
        values[_COLUMNS.index("metrics")] = json.dumps(row["metrics"], sort_keys=True)
        with self._connect() as db:
            db.execute(
                f"INSERT INTO rounds ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                values,
            )

    def rounds(self) -> list[RoundRecord]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM rounds ORDER BY round").fetchall()
        return [_record(dict(zip(_COLUMNS, row, strict=True))) for row in rows]

    def serving(self) -> RoundRecord | None:
        """The round whose candidate serves now: the last promotion not rolled back."""
        serving: list[RoundRecord] = []
        for record in self.rounds():
            if record.decision == Decision.PROMOTED:
                serving.append(record)
            elif record.decision == Decision.ROLLED_BACK and serving:
                serving.pop()
        return serving[-1] if serving else None

    def last_trained_snapshot(self) -> str | None:
        """Snapshot of the newest round that trained and gated a candidate (promoted or
        refused). Failed rounds do not count: their labels are still to be trained on."""
        for record in reversed(self.rounds()):
            if record.decision in (Decision.PROMOTED, Decision.REFUSED) and record.snapshot:
                return record.snapshot
        return None


def _record(row: dict[str, Any]) -> RoundRecord:
    metrics = {
        name: Metric(m["value"], tuple(m["ci95"]) if m["ci95"] else None)  # type: ignore[arg-type]
        for name, m in json.loads(row.pop("metrics")).items()
    }
    return RoundRecord(
        **{k: v for k, v in row.items() if k not in ("decision", "label_counts")},
        decision=Decision(row["decision"]),
        label_counts=json.loads(row["label_counts"]),
        metrics=metrics,
    )
