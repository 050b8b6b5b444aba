from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from relevance.v1 import common_pb2

from contracts.products import product_message, product_row
from services.candidate_generation.batch import (
    Ledger,
    RateLimiter,
    select_queries,
)
from services.candidate_generation.index import CatalogIndex
from services.candidate_generation.queries import LOG, SYNTHETIC, QueryRecord, unreached_products


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
