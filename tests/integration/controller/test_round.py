"""Controller rounds on a real label store: training in a subprocess (the run spec the
embedded stack uses), the gate, a Triton model version per promotion, rollback, ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from loop_fixtures import BRANDS, NEW_BRANDS, add_traffic_labels, tiny_student
from typer.testing import CliRunner

from ops.cli import app as relkd
from services.controller.controller import Controller, LocalTrainer, TritonPromoter
from services.controller.ledger import Decision, Ledger
from services.controller.settings import ControllerSettings
from services.label_store.store import LabelStore

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(human_dataset: Path, tiny_base_model: str, tmp_path: Path) -> ControllerSettings:
    student = tiny_student(human_dataset, tmp_path / "unused", tiny_base_model, max_steps=1)
    config = student.model_dump(mode="json", exclude={"dataset_dir", "output_dir", "max_steps"})
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(config))
    return ControllerSettings(
        work_dir=tmp_path / "controller",
        ledger=tmp_path / "controller" / "ledger.sqlite",
        dataset_dir=human_dataset,
        student_config=tmp_path / "student.yaml",
        min_new_labels=50,
        epochs=6,
        gate_traffic_queries=4,
        bootstrap_samples=200,
        latency_requests=5,
        p99_budget_ms=10_000,
        # The rounds here train a few dozen steps: any candidate not much worse passes.
        ndcg_tolerance=0.5,
        triton_repository=tmp_path / "triton",
        model_name="relkd-student",
    )


def test_rounds_promote_refuse_and_roll_back(
    settings: ControllerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_dir = tmp_path / "store"
    store = LabelStore(store_dir)
    controller = Controller(
        settings,
        store,
        LocalTrainer(timeout_s=600),
        TritonPromoter(settings.triton_repository, settings.model_name, int8=False),
    )
    assert controller.pending().due(settings) is None  # no snapshot yet

    first = add_traffic_labels(store_dir, NEW_BRANDS[:1], first_query=0, at_ns=1_000)
    pending = controller.pending()
    assert pending.snapshot == first and pending.new_labels > settings.min_new_labels
    assert "new labels >=" in pending.due(settings)

    one = controller.run_round()
    assert one.decision == Decision.PROMOTED, one.reason
    assert "no serving student to compare with" in one.reason
    assert one.snapshot == first and one.train_steps >= settings.min_steps
    assert one.label_counts["gate_traffic_queries"] == 4
    assert one.label_counts["teacher:1"] == one.label_counts["snapshot_labels"]
    cand = one.metrics["candidate.ndcg@10"]
    assert cand.ci95[0] <= cand.value <= cand.ci95[1]
    assert {"candidate.ndcg@10.human", "candidate.ndcg@10.traffic", "int8.spearman"} <= set(
        one.metrics
    )
    assert (settings.triton_repository / settings.model_name / "1" / "model.onnx").is_file()
    # The held-out traffic queries are test queries of the round's dataset: never trained on.
    config = yaml.safe_load((settings.work_dir / "round-0001" / "student.yaml").read_text())
    assert config["snapshot"] == first and config["max_steps"] == one.train_steps
    assert controller.pending().due(settings) is None  # nothing new since

    second = add_traffic_labels(store_dir, [BRANDS[0], NEW_BRANDS[1]], first_query=100, at_ns=2_000)
    two = controller.run_round()
    assert two.snapshot == second and two.serving_version == "1"
    assert two.decision in (Decision.PROMOTED, Decision.REFUSED), two.reason
    assert "delta.ndcg@10" in two.metrics and "serving.ndcg@10" in two.metrics
    # The gate's traffic slice is new since the serving snapshot: round 2's differs.
    assert two.label_counts["gate_traffic_queries"] == 4

    serving = controller.ledger.serving()
    assert controller.check_rollback(settings.rollback_disagreement_rate / 2) is None
    rolled = controller.check_rollback(0.9)
    assert rolled is not None and rolled.decision == Decision.ROLLED_BACK
    assert f"round {serving.round}'s student" in rolled.reason
    assert not (settings.triton_repository / settings.model_name / str(serving.round)).exists()
    # One rollback per promotion: the student serving again is not rolled back in turn.
    assert controller.check_rollback(0.9) is None

    records = Ledger(settings.ledger).rounds()
    assert [r.round for r in records] == [1, 2, 3]
    assert all(r.reason for r in records)

    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            monkeypatch.setenv(f"RELKD_CONTROLLER_{name.upper()}", str(value))
    shown = CliRunner().invoke(relkd, ["loop", "status", "--json"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert [r["decision"] for r in json.loads(shown.stdout)] == [str(r.decision) for r in records]
    table = CliRunner().invoke(relkd, ["loop", "status"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "rolled_back" in table.stdout


def test_a_failed_training_run_is_a_failed_round_that_keeps_serving(
    settings: ControllerSettings, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    add_traffic_labels(store_dir, NEW_BRANDS[:1], first_query=0, at_ns=1_000)
    (tmp_path / "student.yaml").write_text(yaml.safe_dump({"lr": -1.0}))
    controller = Controller(
        settings,
        LabelStore(store_dir),
        LocalTrainer(timeout_s=600),
        TritonPromoter(settings.triton_repository, settings.model_name, int8=False),
    )
    record = controller.run_round()
    assert record.decision == Decision.FAILED
    assert "lr" in record.reason
    assert controller.ledger.serving() is None
    assert not (settings.triton_repository / settings.model_name).exists()
