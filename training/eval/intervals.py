"""Bootstrap intervals over test queries, for comparisons run on several seeds.

A model trained with several seeds is scored per test query; its per-query value is the
mean over seeds, so one interval covers both the test-query sample and (averaged) the
training noise. Intervals are percentile bootstraps that resample *queries* with
replacement; a comparison of two models resamples the per-query difference (paired:
the same queries both sides), which is tighter than comparing two separate intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95

PerQuery = Mapping[str, float]  # query id -> metric value on that query


def bootstrap_ci(
    values: np.ndarray,
    samples: int = DEFAULT_SAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the mean of `values` over resampled queries."""
    if len(values) == 0:
        raise ValueError("bootstrap_ci: no values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(samples, len(values)))
    means = np.asarray(values, dtype=np.float64)[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def seed_mean(per_seed: Sequence[PerQuery]) -> dict[str, float]:
    """Per-query mean over seeds; every seed must have scored the same queries."""
    if not per_seed:
        raise ValueError("seed_mean: no seeds")
    queries = set(per_seed[0])
    for i, run in enumerate(per_seed[1:], start=1):
        if set(run) != queries:
            raise ValueError(f"seed_mean: seed run {i} scored other queries than run 0")
    return {q: float(np.mean([run[q] for run in per_seed])) for q in sorted(queries)}


@dataclass(frozen=True)
class Estimate:
    """A model's mean metric over test queries (seed-averaged) with its interval."""

    mean: float
    low: float
    high: float
    seeds: int
    seed_means: tuple[float, ...]  # the metric of each seed's run alone

    def as_dict(self) -> dict[str, object]:
        return {
            "mean": self.mean,
            "ci95": [self.low, self.high],
            "seeds": self.seeds,
            "seed_means": list(self.seed_means),
        }


def estimate(per_seed: Sequence[PerQuery], samples: int = DEFAULT_SAMPLES) -> Estimate:
    """Mean and bootstrap interval of a model scored with one or more seeds."""
    values = np.array(list(seed_mean(per_seed).values()))
    low, high = bootstrap_ci(values, samples)
    return Estimate(
        mean=float(values.mean()),
        low=low,
        high=high,
        seeds=len(per_seed),
        seed_means=tuple(float(np.mean(list(run.values()))) for run in per_seed),
    )


@dataclass(frozen=True)
class Difference:
    """`a - b` over the same queries, with the paired bootstrap interval."""

    mean: float
    low: float
    high: float
    # Whether a's and b's own intervals are disjoint with a above: stricter than the
    # paired interval excluding zero.
    intervals_disjoint: bool

    @property
    def a_better(self) -> bool:
        """The paired interval lies above zero."""
        return self.low > 0

    def as_dict(self) -> dict[str, object]:
        return {
            "mean": self.mean,
            "ci95": [self.low, self.high],
            "a_better": self.a_better,
            "intervals_disjoint": self.intervals_disjoint,
        }


def paired_difference(
    a: Sequence[PerQuery], b: Sequence[PerQuery], samples: int = DEFAULT_SAMPLES
) -> Difference:
    """Seed-averaged per-query difference `a - b` and its paired bootstrap interval."""
    mean_a, mean_b = seed_mean(a), seed_mean(b)
    if set(mean_a) != set(mean_b):
        raise ValueError("paired_difference: the two models scored different queries")
    diff = np.array([mean_a[q] - mean_b[q] for q in mean_a])
    low, high = bootstrap_ci(diff, samples)
    est_a, est_b = estimate(a, samples), estimate(b, samples)
    return Difference(float(diff.mean()), low, high, est_a.low > est_b.high)
