"""The shared training loop (training/loop.py) on a tiny regression task, on CPU."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from training.loop import (
    DeviceSetup,
    Evaluation,
    LoopSettings,
    StepLoss,
    TrainingLoop,
    resolve_precision,
    seed_everything,
)

Batch = tuple[torch.Tensor, torch.Tensor]


class RegressionTask:
    """y = x @ w; batches a pure function of the step; scores scripted per evaluation."""

    def __init__(self, model: torch.nn.Linear, scores: Sequence[float] = ()) -> None:
        self.model = model
        self.scores = list(scores)
        self.events: list[tuple[str, int | None, str]] = []
        self.preparing = threading.Event()
        self.overlaps = 0
        self.best: list[int] = []

    def micro_batches(self, step: int) -> list[Batch]:
        self.preparing.set()
        self.events.append(("prepare", step, threading.current_thread().name))
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=generator)
        self.preparing.clear()
        return [(x, x @ torch.arange(1.0, 5.0))]

    def loss(self, batch: Batch) -> StepLoss:
        x, y = batch
        self.events.append(("loss", None, threading.current_thread().name))
        loss = torch.nn.functional.mse_loss(self.model(x).squeeze(-1), y)
        return StepLoss(loss, {"mse": loss.detach()}, len(x))

    def evaluate(self) -> Evaluation:
        if self.preparing.is_set():
            self.overlaps += 1
        score = self.scores.pop(0) if self.scores else 0.0
        return Evaluation(score=score, metrics={"score": score})

    def on_best(self, step: int, evaluation: Evaluation) -> None:
        self.best.append(step)

    def extra_state(self) -> dict[str, Any]:
        return {"best": list(self.best)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.best = state["best"]


class RecordingLog:
    """Records which optimizer step the loop had reached when each row was written."""

    def __init__(self, loop: TrainingLoop) -> None:
        self.loop = loop
        self.rows: list[dict[str, float]] = []
        self.written_at: list[int] = []

    def write(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self.written_at.append(self.loop.state.step)


def _loop(model: torch.nn.Module, **settings: Any) -> TrainingLoop:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    defaults: dict[str, Any] = {
        "max_steps": 10,
        "grad_accum": 1,
        "eval_every": 5,
        "patience": 0,
        "description": "test",
        "progress": False,
    }
    return TrainingLoop(
        model,
        optimizer,
        get_linear_schedule_with_warmup(optimizer, 0, settings.get("max_steps", 10)),
        DeviceSetup.resolve("cpu", "auto"),
        LoopSettings(**{**defaults, **settings}),
    )


def _model() -> torch.nn.Linear:
    seed_everything(0)
    return torch.nn.Linear(4, 1)


def test_losses_are_read_at_log_points_and_evaluations_only():
    model = _model()
    loop = _loop(model, log_every=3, eval_every=5)
    log = RecordingLog(loop)
    result = loop.run(RegressionTask(model), log)  # type: ignore[arg-type]
    assert [int(r["step"]) for r in log.rows] == list(range(1, 11))
    # Rows (and so the device-to-host reads) come in batches: at steps 3, 5, 6, 9, 10.
    assert log.written_at == [3, 3, 3, 5, 5, 6, 9, 9, 9, 10]
    assert [r.get("score") for r in log.rows if "score" in r] == [0.0, 0.0]
    assert all(r["examples_per_s"] > 0 and r["loss"] == r["mse"] for r in log.rows)
    assert result.examples == 80 and result.state.step == 10

    # The batched reads log exactly the loss each step computed.
    reference = _model()
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, 10)
    task = RegressionTask(reference)
    for step, row in enumerate(log.rows):
        (batch,) = task.micro_batches(step)
        loss = task.loss(batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        assert row["loss"] == pytest.approx(loss.item(), rel=1e-6)


def test_batches_are_prepared_ahead_on_a_worker_and_never_during_an_evaluation():
    # The worker runs by default on CUDA; forced here.
    model = _model()
    task = RegressionTask(model)
    _loop(model, eval_every=1, prefetch=True).run(task)  # type: ignore[arg-type]
    prepared = [step for kind, step, _ in task.events if kind == "prepare"]
    assert prepared == list(range(10))
    assert {thread for kind, _, thread in task.events if kind == "prepare"} != {
        thread for kind, _, thread in task.events if kind == "loss"
    }
    assert all(thread.startswith("prefetch") for k, _, thread in task.events if k == "prepare")
    assert task.overlaps == 0

    # By default (on a CPU) the training thread prepares each step itself.
    task = RegressionTask(model)
    _loop(model, max_steps=3).run(task)  # type: ignore[arg-type]
    assert {thread for _, _, thread in task.events} == {threading.current_thread().name}


def test_early_stopping_after_patience_evaluations_without_gain():
    model = _model()
    task = RegressionTask(model, scores=[0.5, 0.7, 0.6, 0.65, 0.9])
    result = _loop(model, max_steps=50, eval_every=2, patience=2).run(task)  # type: ignore[arg-type]
    assert result.state.stopped_early and result.state.step == 8
    assert result.state.best_step == 4 and result.state.best_score == 0.7
    assert task.best == [2, 4]
    assert [h["step"] for h in result.state.history] == [2, 4, 6, 8]


def test_patience_zero_never_stops():
    model = _model()
    task = RegressionTask(model, scores=[1.0] + [0.0] * 9)
    result = _loop(model, eval_every=1).run(task)  # type: ignore[arg-type]
    assert not result.state.stopped_early and result.state.step == 10


def test_resume_state_restores_the_loop_and_the_task(tmp_path: Path):
    model = _model()
    task = RegressionTask(model, scores=[0.1, 0.3])
    loop = _loop(model, max_steps=4, eval_every=2, resume_dir=tmp_path, keep_resume_state=True)
    loop.run(task)  # type: ignore[arg-type]
    fresh_model = torch.nn.Linear(4, 1)
    fresh_task = RegressionTask(fresh_model)
    fresh = _loop(fresh_model, max_steps=4, resume_dir=tmp_path, keep_resume_state=True)
    assert fresh.resume(fresh_task)  # type: ignore[arg-type]
    assert fresh.state.step == 4 and fresh.state.best_step == 4 and fresh_task.best == [2, 4]
    assert torch.equal(fresh_model.weight, model.weight)
    # A run that does not keep its resume state removes it at the end.
    _loop(model, max_steps=4, resume_dir=tmp_path / "gone").run(task)  # type: ignore[arg-type]
    assert not (tmp_path / "gone").exists()


def test_cpu_runs_fp32_without_bucketing_and_half_precision_needs_a_gpu():
    setup = DeviceSetup.resolve("cpu", "auto")
    assert setup.dtype == torch.float32 and setup.pad_multiple == 1
    assert not setup.grad_scaler().is_enabled()
    with setup.autocast():
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="precision: bf16 needs a GPU"):
        resolve_precision("bf16", torch.device("cpu"))
