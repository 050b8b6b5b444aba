"""The ledger keeps every field of every round, and knows which student serves."""

from __future__ import annotations

from pathlib import Path

from services.controller.ledger import Decision, Ledger, Metric, RoundRecord


def _record(number: int, decision: Decision, snapshot: str = "000001") -> RoundRecord:
    return RoundRecord(
        round=number,
        started_at="2026-11-27T05:00:00+00:00",
        finished_at="2026-11-27T05:10:00+00:00",
        snapshot=snapshot,
        decision=decision,
        reason=f"round {number}: {decision}",
        label_counts={"human": 120, "teacher:v1": 4000, "new_labels": 2500},
        metrics={
            "candidate.ndcg@10": Metric(0.81, (0.78, 0.84)),
            "delta.ndcg@10": Metric(0.02, (-0.005, 0.041)),
            "candidate.p99_ms": Metric(12.5),
        },
        candidate_p99_ms=12.5,
        serving_p99_ms=11.0,
        candidate_version=str(number),
        serving_version=str(number - 1) if number > 1 else None,
        candidate_checkpoint=f"/runs/round-{number}/candidate",
        serving_checkpoint=None,
        train_steps=300 * number,
    )


def test_rounds_round_trip_every_field(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    written = [_record(1, Decision.PROMOTED), _record(2, Decision.REFUSED, "000002")]
    for record in written:
        ledger.append(record)
    # A second connection (another process: `relkd loop status`) reads the same rows.
    assert Ledger(tmp_path / "ledger.sqlite").rounds() == written
    assert ledger.next_round() == 3
    assert ledger.last_trained_snapshot() == "000002"


def test_serving_follows_promotions_and_rollbacks(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.serving() is None and ledger.next_round() == 1
    ledger.append(_record(1, Decision.PROMOTED))
    ledger.append(_record(2, Decision.FAILED))
    ledger.append(_record(3, Decision.PROMOTED, "000003"))
    assert ledger.serving().round == 3
    ledger.append(_record(4, Decision.ROLLED_BACK, "000003"))
    assert ledger.serving().round == 1
    # Neither a rollback nor a failed round counts as training on its snapshot.
    assert ledger.last_trained_snapshot() == "000003"
    ledger.append(_record(5, Decision.FAILED, "000009"))
    assert ledger.last_trained_snapshot() == "000003" and ledger.serving().round == 1
