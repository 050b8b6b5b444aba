"""The gate refuses a candidate trained on shuffled labels and keeps the serving student."""

from __future__ import annotations

from pathlib import Path

import pytest
from loop_fixtures import tiny_student, write_dataset

from services.controller.gate import GateRules, build_gate_set, evaluate
from training.student.checkpoint import load_student
from training.student.train import train

pytestmark = pytest.mark.integration


def test_candidate_trained_on_shuffled_labels_is_refused(
    human_dataset: Path, tiny_base_model: str, tmp_path: Path
) -> None:
    shuffled = write_dataset(tmp_path / "shuffled", shuffle_seed=1)
    common = {"max_steps": 250, "use_teacher_labels": False}
    train(tiny_student(human_dataset, tmp_path / "serving", tiny_base_model, **common))
    train(tiny_student(shuffled, tmp_path / "shuffled-student", tiny_base_model, **common))
    serving = load_student(tmp_path / "serving", device="cpu")
    gate = build_gate_set(human_dataset, "test", [], {})
    rules = GateRules(
        ndcg_tolerance=0.01, p99_budget_ms=10_000, int8_serving=False, int8_min_spearman=0.99
    )

    bad = evaluate(
        gate,
        rules,
        load_student(tmp_path / "shuffled-student", device="cpu"),
        serving,
        pairs_per_request=20,
        requests=5,
    )
    assert not bad.promote
    assert bad.reason.startswith("worse than serving: NDCG@10")
    # Worse beyond the interval, not by chance (measured: -0.62, CI -0.77..-0.50).
    assert bad.metrics["delta.ndcg@10"].ci95[1] < -rules.ndcg_tolerance

    # The same gate passes the serving student against itself: the refusal is the labels.
    same = evaluate(gate, rules, serving, serving, pairs_per_request=20, requests=5)
    assert same.promote, same.reason
