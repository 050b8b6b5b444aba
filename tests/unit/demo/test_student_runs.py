"""The demo's student grid: every configuration on every seed, the same human data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ops.demo.pipeline import SCALES, DemoRun, student_runs


def test_default_scale_trains_every_configuration_on_three_seeds_in_the_scarce_regime():
    scale = SCALES["default"]
    assert scale.seeds >= 3 and scale.profile == "hard"
    assert scale.human_train_queries is not None
    assert scale.human_train_queries < max(scale.augmented_sizes) < scale.unlabeled_queries
    runs = student_runs(DemoRun(Path("run"), "default", seed=5))
    assert len({r.name for r in runs}) == len(runs)
    groups = Counter(r.group for r in runs)
    sizes = (0, *scale.augmented_sizes)
    assert set(groups) == {f"cross-encoder-aug{n}" for n in sizes} | {
        "two-tower-aug0",
        f"two-tower-aug{sizes[-1]}",
    }
    assert set(groups.values()) == {scale.seeds}
    assert {r.seed for r in runs} == set(range(5, 5 + scale.seeds))


def test_ci_scale_keeps_one_seed():
    assert SCALES["ci"].seeds == 1
    assert len(student_runs(DemoRun(Path("run"), "ci"))) == 6
