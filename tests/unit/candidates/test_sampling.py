from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contracts import schema
from contracts.topics import pair_key
from services.candidate_generation.index import CatalogIndex
from services.candidate_generation.sampling import (
    RANDOM,
    STRATIFIED,
    TOP,
    SamplingConfig,
    SpectrumSampler,
    load_labeled_pairs,
    strata_bounds,
)


def test_strata_cover_the_range_without_overlap() -> None:
    bounds = strata_bounds(10, 500, 4)
    assert bounds[0][0] == 10 and bounds[-1][1] == 500
    assert all(hi == next_lo for (_, hi), (next_lo, _) in itertools.pairwise(bounds))
    widths = [hi - lo for lo, hi in bounds]
    assert widths == sorted(widths)  # deeper strata are wider


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="per_query"):
        SamplingConfig(per_query=0)
    with pytest.raises(ValueError, match="top_fraction"):
        SamplingConfig(top_fraction=0.9, random_fraction=0.3)
    with pytest.raises(ValueError, match="depth"):
        SamplingConfig(per_query=50, depth=10)


def test_sample_spans_the_spectrum(index: CatalogIndex) -> None:
    config = SamplingConfig(per_query=20, top_fraction=0.25, random_fraction=0.25, depth=60)
    sampler = SpectrumSampler(index, config)
    [candidates] = sampler.sample_queries(["q1"], ["grey wool area rug"])
    assert len(candidates) == 20
    assert len({c.product_id for c in candidates}) == 20
    by_stratum = {s: [c for c in candidates if c.stratum == s] for s in (TOP, STRATIFIED, RANDOM)}
    assert [len(by_stratum[s]) for s in (TOP, STRATIFIED, RANDOM)] == [5, 10, 5]
    assert [c.rank for c in by_stratum[TOP]] == [1, 2, 3, 4, 5]
    assert all(5 < c.rank <= 60 for c in by_stratum[STRATIFIED])
    # Stratified picks reach well below the head, not just ranks 6..15.
    assert max(c.rank for c in by_stratum[STRATIFIED]) > 30
    assert all(c.rank == 0 for c in by_stratum[RANDOM])


def test_sampling_is_deterministic_per_query(index: CatalogIndex) -> None:
    sampler = SpectrumSampler(index, SamplingConfig(per_query=12, depth=60, seed=3))
    first = sampler.sample_queries(["q1", "q2"], ["oak table", "oak table"])
    again = sampler.sample_queries(["q1", "q2"], ["oak table", "oak table"])
    assert first == again
    assert first[0] != first[1]  # another query id draws other deep and random products


def test_already_labeled_pairs_are_skipped(index: CatalogIndex) -> None:
    config = SamplingConfig(per_query=10, depth=40)
    plain = SpectrumSampler(index, config).sample_queries(["q1"], ["navy sofa"])[0]
    labeled = {pair_key("q1", c.product_id) for c in plain[:4]}
    skipping = SpectrumSampler(index, config, labeled).sample_queries(["q1"], ["navy sofa"])[0]
    assert len(skipping) == 10
    assert not labeled & {pair_key("q1", c.product_id) for c in skipping}
    # Labels of another query do not hide this query's pairs.
    other = {pair_key("q2", c.product_id) for c in plain}
    assert SpectrumSampler(index, config, other).sample_queries(["q1"], ["navy sofa"])[0] == plain


def test_small_catalog_yields_every_product_once(index: CatalogIndex) -> None:
    config = SamplingConfig(per_query=200, depth=300)
    [candidates] = SpectrumSampler(index, config).sample_queries(["q"], ["lamp"])
    assert sorted(c.product_id for c in candidates) == sorted(index.product_ids())


def test_load_labeled_pairs_filters_by_teacher_version(tmp_path: Path) -> None:
    rows = [
        {
            "query_id": q,
            "query": "x",
            "product_id": p,
            "grade_probs": [0.25] * 4,
            "expected_score": 1.5,
            "teacher_model": "t",
            "teacher_version": v,
        }
        for q, p, v in [("q1", "a", "v1"), ("q1", "b", "v2"), ("q2", "a", "v1")]
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.TEACHER_LABELS), tmp_path / "t.parquet")
    assert load_labeled_pairs(tmp_path / "t.parquet", "v1") == {
        pair_key("q1", "a"),
        pair_key("q2", "a"),
    }
