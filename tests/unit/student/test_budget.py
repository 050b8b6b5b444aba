"""A budget in epochs grows the step count with the training set."""

from __future__ import annotations

from pathlib import Path

from training.student.config import StudentTrainConfig, epoch_steps


def test_epoch_steps_cover_every_example_once_per_epoch():
    # 8 queries x 4 pairs = 32 pairs = 64 examples per step.
    assert epoch_steps(1.0, 2240, 8, 4, 1) == 35
    assert epoch_steps(2.0, 2240, 8, 4, 1) == 70
    assert epoch_steps(1.0, 2240, 8, 4, 2) == 18  # two micro-batches per step
    assert epoch_steps(0.01, 10, 8, 4, 1) == 1


def test_with_budget_resolves_max_steps_only_when_epochs_is_set():
    fixed = StudentTrainConfig(dataset_dir=Path("d"), max_steps=123)
    assert fixed.with_budget(10_000).max_steps == 123
    by_epochs = fixed.model_copy(update={"epochs": 2.0})
    small, large = by_epochs.with_budget(2240), by_epochs.with_budget(7040)
    assert (small.max_steps, large.max_steps) == (70, 220)
