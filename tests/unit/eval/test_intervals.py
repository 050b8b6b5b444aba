"""Bootstrap intervals over test queries, seed averaging and paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from training.eval.intervals import bootstrap_ci, estimate, paired_difference, seed_mean

QUERIES = [f"q{i:02d}" for i in range(40)]


def _runs(base: np.ndarray, shifts: list[float]) -> list[dict[str, float]]:
    return [dict(zip(QUERIES, (base + s).tolist(), strict=True)) for s in shifts]


def test_interval_covers_the_mean_and_narrows_with_more_queries():
    rng = np.random.default_rng(1)
    few, many = rng.normal(0.5, 0.1, 10), rng.normal(0.5, 0.1, 1000)
    lo, hi = bootstrap_ci(few, 1000, 0.95, seed=0)
    assert lo < few.mean() < hi
    lo_many, hi_many = bootstrap_ci(many, 1000, 0.95, seed=0)
    assert hi_many - lo_many < hi - lo
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci(np.array([]))


def test_seed_mean_averages_each_query_and_refuses_other_queries():
    a = {"q1": 0.2, "q2": 0.4}
    assert seed_mean([a, {"q1": 0.4, "q2": 0.8}]) == pytest.approx({"q1": 0.3, "q2": 0.6})
    with pytest.raises(ValueError, match="other queries"):
        seed_mean([a, {"q1": 0.1, "q3": 0.2}])


def test_estimate_reports_each_seed_and_the_seed_mean():
    base = np.linspace(0.3, 0.9, len(QUERIES))
    est = estimate(_runs(base, [0.0, 0.02, 0.04]))
    assert est.seeds == 3
    assert est.seed_means == pytest.approx((base.mean(), base.mean() + 0.02, base.mean() + 0.04))
    assert est.mean == pytest.approx(base.mean() + 0.02)
    assert est.low < est.mean < est.high


def test_paired_difference_sees_a_consistent_small_gain_that_separate_intervals_miss():
    # Query difficulty varies a lot; the student is better by 0.01 on every query: the
    # paired interval excludes zero while the two models' own intervals overlap.
    base = np.random.default_rng(2).uniform(0.2, 1.0, len(QUERIES)) * 0.98
    better = paired_difference(_runs(base, [0.01, 0.01, 0.01]), _runs(base, [0.0]))
    assert better.mean == pytest.approx(0.01)
    assert better.a_better and better.low > 0
    assert not better.intervals_disjoint


def test_paired_difference_of_noise_is_not_a_win():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.8, len(QUERIES))
    noisy = [dict(zip(QUERIES, (base + rng.normal(0, 0.05, len(QUERIES))).tolist(), strict=True))]
    same = paired_difference(noisy, _runs(base, [0.0]))
    assert same.low < 0 < same.high
    assert not same.a_better
    with pytest.raises(ValueError, match="different queries"):
        paired_difference([{"q1": 0.1}], [{"q2": 0.1}])
