from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from relevance.v1 import common_pb2

from contracts.candidates import CandidateFile, read_candidate_batches
from contracts.products import product_message, product_row
from services.candidate_generation.batch import Ledger, run_batch, select_queries
from services.candidate_generation.index import CatalogIndex
from services.candidate_generation.queries import LOG, SYNTHETIC, QueryRecord, unreached_products
from services.candidate_generation.sampling import SamplingConfig, SpectrumSampler
from services.core.rate import RateLimiter


def test_product_round_trips_through_the_wire_message(catalog: list[dict[str, Any]]) -> None:
    product = catalog[7]
    assert product_row(product_message(product)) == product
    bare = product_row(common_pb2.Product(product_id="x", title="t"))
    assert bare["brand"] is None and bare["attributes"] == {} and bare["features"] == []


def test_ledger_remembers_per_index_version(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite")
    ledger.record("v1", {"q1": 8, "q2": 8})
    ledger.close()
    reopened = Ledger(tmp_path / "state" / "ledger.sqlite")
    assert reopened.published("v1") == {"q1", "q2"}
    assert reopened.published("v2") == set()


def test_rate_limiter_rejects_non_positive_rates() -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimiter(0)


def test_rate_limiter_sleeps_to_hold_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"now": 100.0}
    slept: list[float] = []
    monkeypatch.setattr("time.monotonic", lambda: clock["now"])
    monkeypatch.setattr("time.sleep", slept.append)
    limiter = RateLimiter(per_second=10)
    limiter.acquire(5)  # 5 units at 10/s are due by t=0.5
    limiter.acquire(5)
    assert slept == [pytest.approx(0.5), pytest.approx(1.0)]


def test_select_queries_tops_up_with_synthetic_queries_for_unreached_products(
    index: CatalogIndex,
) -> None:
    pool = [QueryRecord("q1", "sofa", LOG), QueryRecord("q2", "SOFA", LOG)]
    selected = select_queries(index, pool, 12, seed=0)
    assert len(selected) == 12
    assert selected[0] == pool[0] and all(q.source == SYNTHETIC for q in selected[1:])
    assert select_queries(index, pool, 12, seed=0) == selected  # reruns select the same
    # The synthetic queries reach products the logged one did not.
    before = set(unreached_products(index, pool[:1], depth=10))
    after = set(unreached_products(index, selected, depth=10))
    assert len(after) < len(before)
    assert select_queries(index, pool, 12, synthetic=False) == pool[:1]


def test_batch_run_to_a_file_is_resumable_and_loses_nothing(
    index: CatalogIndex, tmp_path: Path
) -> None:
    """`relkd candidates generate --out`: the file a teacher-label Job reads."""
    sampler = SpectrumSampler(index, SamplingConfig(per_query=6, depth=40, seed=1))
    queries = [QueryRecord(f"q{i}", text, LOG) for i, text in enumerate(["oak table", "red rug"])]
    out = tmp_path / "candidates.jsonl"
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with CandidateFile(out) as sink:
        first = run_batch(index, sampler, queries[:1], sink, ledger, progress=False)
    # A crash mid-line: the half line is dropped on reopen, its query is still due.
    with out.open("a") as file:
        file.write('{"query_id": "q1", "que')
    with CandidateFile(out) as sink:
        second = run_batch(index, sampler, queries, sink, ledger, progress=False)
    ledger.close()
    assert (first.queries_published, second.queries_published) == (1, 1)
    assert second.queries_skipped == 1
    batches = list(read_candidate_batches(out))
    assert [b.query_id for b in batches] == ["q0", "q1"]
    assert sum(len(b.products) for b in batches) == first.pairs_published + second.pairs_published
    expected = sampler.sample_queries(["q1"], ["red rug"])[0]
    assert [p.product_id for p in batches[1].products] == [c.product_id for c in expected]
    assert batches[1].index_version == index.version and batches[1].source == LOG


def test_generate_command_writes_a_candidates_file_without_kafka(
    index: CatalogIndex, tmp_path: Path
) -> None:
    import json

    from typer.testing import CliRunner

    from services.candidate_generation.cli import app

    index.save(tmp_path / "index")
    out = tmp_path / "run" / "candidates.jsonl"
    args = ["generate", "--queries", "3", "--index-dir", str(tmp_path / "index"), "--out", str(out)]
    args += ["--per-query", "5", "--state-dir", str(tmp_path / "state")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    batches = list(read_candidate_batches(out))
    assert report["queries_published"] == len(batches) == 3
    assert report["pairs_published"] == sum(len(b.products) for b in batches) == 15
    again = CliRunner().invoke(app, args)
    assert json.loads(again.stdout.strip().splitlines()[-1])["queries_skipped"] == 3
    assert len(list(read_candidate_batches(out))) == 3
