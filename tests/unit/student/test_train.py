from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModel
from typer.testing import CliRunner

from training.loop import MetricsLog
from training.student.checkpoint import load_model, load_student
from training.student.cli import app
from training.student.config import StudentKind, StudentTrainConfig
from training.student.scaling import run_scaling
from training.student.train import LAST, METRICS_CSV, finished_run, output_dir_lock, train


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("kind", ["cross-encoder", "two-tower"])
def test_train_writes_best_checkpoint_and_metrics(tiny_config: StudentTrainConfig, kind: str):
    config = tiny_config.model_copy(update={"kind": StudentKind(kind)})
    result = train(config)
    out = config.output_dir
    assert result.steps == 6 and 0.0 <= result.best_dev_ndcg10 <= 1.0
    assert (out / "student.json").exists() and not (out / LAST).exists()
    rows = _rows(out / METRICS_CSV)
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    evaluated = [float(r["dev_ndcg10"]) for r in rows if r["dev_ndcg10"]]
    assert len(evaluated) == 2 and max(evaluated) == pytest.approx(result.best_dev_ndcg10)
    assert load_student(out, device="cpu").score_pairs(["acme sofa"], [{"title": "acme sofa"}])

    # Frozen word embeddings come out as they went in; the layers were trained.
    trained = load_model(out)
    base = AutoModel.from_pretrained(config.base_model)
    encoder = trained.encoders()[0]
    assert torch.equal(encoder.get_input_embeddings().weight, base.get_input_embeddings().weight)
    base_layer = base.encoder.layer[0].attention.self.query.weight
    trained_layer = encoder.base_model.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(trained_layer, base_layer)


def test_training_is_deterministic(tiny_config: StudentTrainConfig, tmp_path: Path):
    first = train(tiny_config.model_copy(update={"output_dir": tmp_path / "a", "max_steps": 3}))
    second = train(tiny_config.model_copy(update={"output_dir": tmp_path / "b", "max_steps": 3}))
    losses_a = [r["loss"] for r in _rows(tmp_path / "a" / METRICS_CSV)]
    losses_b = [r["loss"] for r in _rows(tmp_path / "b" / METRICS_CSV)]
    assert losses_a == losses_b and first.best_dev_ndcg10 == second.best_dev_ndcg10


def test_resume_continues_an_interrupted_run(
    tiny_config: StudentTrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    base = tiny_config.model_copy(update={"eval_every": 2, "patience": 10})
    train(base.model_copy(update={"output_dir": tmp_path / "full"}))
    full_losses = [float(r["loss"]) for r in _rows(tmp_path / "full" / METRICS_CSV)]

    cut = base.model_copy(update={"output_dir": tmp_path / "cut"})
    original_write = MetricsLog.write

    def crash_at_step_5(self: MetricsLog, row: dict[str, float]) -> None:
        if row["step"] == 5:
            raise KeyboardInterrupt
        original_write(self, row)

    monkeypatch.setattr(MetricsLog, "write", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    monkeypatch.setattr(MetricsLog, "write", original_write)
    assert (cut.output_dir / LAST / "trainer_state.pt").exists()

    resumed = train(cut.model_copy(update={"resume": True}))
    assert resumed.steps == 6 and not (cut.output_dir / LAST).exists()
    rows = _rows(cut.output_dir / METRICS_CSV)
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    # Steps 5 and 6 after the resume see the same batches, weights and optimizer state.
    assert [float(r["loss"]) for r in rows] == pytest.approx(full_losses, rel=1e-4)


def test_finished_run_is_found_only_for_the_same_training_settings(
    tiny_config: StudentTrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    config = tiny_config.model_copy(update={"max_steps": 2, "eval_every": 1})
    assert finished_run(config) is None
    result = train(config)
    # Reporting settings do not matter; anything that changes the model does.
    assert finished_run(config.model_copy(update={"progress": True})) == result
    assert finished_run(config.model_copy(update={"seed": config.seed + 1})) is None
    assert finished_run(config.model_copy(update={"max_steps": 3})) is None
    # Moved elsewhere, it is still the same run, reported where it now is.
    moved = tmp_path / "moved"
    config.output_dir.rename(moved)
    found = finished_run(config.model_copy(update={"output_dir": moved}))
    assert found is not None and found.output_dir == str(moved)
    assert found.best_dev_ndcg10 == result.best_dev_ndcg10

    # The same settings trained again into that directory and interrupted: the earlier
    # run's summary no longer vouches for the checkpoint, so the run is not finished.
    again = config.model_copy(update={"output_dir": moved})

    def crash(self: MetricsLog, row: dict[str, float]) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(MetricsLog, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        train(again)
    assert finished_run(again) is None


def test_early_stopping_stops_before_max_steps(tiny_config: StudentTrainConfig):
    config = tiny_config.model_copy(update={"max_steps": 40, "eval_every": 1, "patience": 1})
    result = train(config.model_copy(update={"lr": 1e-12}))
    assert result.stopped_early and result.steps < 40
    assert result.best_step < result.steps


def test_cli_train_from_yaml_with_overrides(tiny_config: StudentTrainConfig, tmp_path: Path):
    config_file = tmp_path / "student.yaml"
    raw = json.loads(tiny_config.model_dump_json())
    config_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "cli-student"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--config",
            str(config_file),
            "--output-dir",
            str(out),
            "--max-steps",
            "2",
            "--set",
            "kind=two-tower",
            "--set",
            "loss_weights.kl=0",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["kind"] == "two-tower"
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["loss_weights"]["kl"] == 0 and saved["loss_weights"]["margin_mse"] == 1.0


def test_cli_reports_bad_config_field(tmp_path: Path):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump({"dataset_dir": str(tmp_path), "max_steps": -1}))
    result = CliRunner().invoke(app, ["train", "--config", str(config_file)])
    assert result.exit_code == 2
    assert "max_steps" in result.output


def test_cli_scale_trains_human_only_and_each_size(tiny_config: StudentTrainConfig, tmp_path: Path):
    config_file = tmp_path / "student.yaml"
    config_file.write_text(
        yaml.safe_dump(
            json.loads(tiny_config.model_copy(update={"max_steps": 2}).model_dump_json())
        )
    )
    out = tmp_path / "scale"
    result = CliRunner().invoke(
        app,
        [
            "scale",
            "--config",
            str(config_file),
            "--sizes",
            "3,1",
            "--output-dir",
            str(out),
            "--reference",
            "bm25",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "scaling.json").read_text())
    reference, *students = rows
    assert reference["model"] == "bm25" and 0 < reference["test_ndcg@10"] <= 1
    assert [r["teacher_queries"] for r in students] == [0, 1, 3]
    assert all(r["human_queries"] == 8 and 0 <= r["test_ndcg@10"] <= 1 for r in students)
    assert "| cross-encoder | 3 | 8 |" in result.stdout
    assert "| bm25 | – | – | – |" in result.stdout
    assert (out / "scaling.png").read_bytes().startswith(b"\x89PNG")


def test_scale_in_parallel_matches_the_sequential_grid(
    tiny_config: StudentTrainConfig, tmp_path: Path
):
    base = tiny_config.model_copy(update={"max_steps": 2, "torch_threads": 1})
    results = {}
    for jobs in (1, 2):
        config = base.model_copy(update={"output_dir": tmp_path / f"jobs{jobs}"})
        rows = run_scaling(config, [2], [StudentKind.CROSS_ENCODER], jobs=jobs)
        results[jobs] = [(r["augmented_queries"], round(r["test_ndcg@10"], 6)) for r in rows]
    # Deterministic training: worker processes reproduce the sequential numbers, in grid order.
    assert results[2] == results[1]
    assert [size for size, _ in results[1]] == [0, 2]


def test_scale_rejects_a_zero_size(tiny_config: StudentTrainConfig):
    with pytest.raises(ValueError, match="sizes: must be positive"):
        run_scaling(tiny_config, [0, 2], [StudentKind.CROSS_ENCODER])


def test_a_second_run_into_the_same_output_dir_is_refused(tiny_config: StudentTrainConfig):
    refused = pytest.raises(ValueError, match=r"output_dir: .* in use by another training run")
    with output_dir_lock(tiny_config.output_dir), refused:
        train(tiny_config)
    # Released when the holder is done: the run goes ahead.
    assert train(tiny_config.model_copy(update={"max_steps": 1})).steps == 1
