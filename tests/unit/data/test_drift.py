"""The drift generator: deterministic per seed, and the drift it promises is in the data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from contracts.schema import Split
from training.data import storage
from training.data.drift import DriftConfig, DriftWorld, query_mix, simulate_drift
from training.data.simulator import HARD_QUERY_TYPES, PoolShape

SMALL = DriftConfig(
    products=300,
    rounds=3,
    base_queries=20,
    bootstrap_queries=6,
    traffic_queries=6,
    test_queries=5,
    gate_queries=4,
    teacher_queries=12,
    pool=PoolShape(3, 2, 2, 1, 1, 1),
)


def _digest(root: Path) -> str:
    """The content of every table under `root`, hashed."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.parquet")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(repr(pq.read_table(path).to_pylist()).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DriftWorld:
    return simulate_drift(tmp_path_factory.mktemp("drift"), SMALL)


def test_same_seed_same_world_other_seed_other_world(world: DriftWorld, tmp_path: Path) -> None:
    again = simulate_drift(tmp_path / "again", SMALL)
    assert _digest(again.root) == _digest(world.root)
    other = simulate_drift(tmp_path / "other", DriftConfig(**{**SMALL.__dict__, "seed": 1}))
    assert _digest(other.root) != _digest(world.root)


def test_each_round_brings_new_types_brands_renames_and_query_styles(world: DriftWorld) -> None:
    def products(dataset: Path) -> dict[str, dict]:
        return {p["product_id"]: p for p in storage.read_table(dataset, "products").to_pylist()}

    before = products(world.base)
    base_types = {p["product_type"] for p in before.values()}
    base_brands = {p["brand"] for p in before.values()}
    base_queries = storage.read_table(world.base, "queries").to_pylist()
    base_styles = {q["query_type"] for q in base_queries}
    assert not base_styles & set(HARD_QUERY_TYPES)
    for number in range(1, SMALL.rounds + 1):
        now = products(world.catalog(number))
        changed = storage.read_table(world.changes(number), "products").to_pylist()
        added = [p for p in changed if p["product_id"] not in before]
        renamed = [p for p in changed if p["product_id"] in before]
        assert added and renamed
        assert all(before[p["product_id"]]["title"] != p["title"] for p in renamed)
        assert all(now[p["product_id"]] == p for p in changed)
        assert set(before) < set(now)
        info = world.summary()["rounds"][number]
        assert info["new_products"] == len(added) and info["renamed_products"] == len(renamed)
        assert set(info["new_types"]) <= {p["product_type"] for p in added} - base_types
        assert set(info["new_brands"]) <= {p["brand"] for p in added} - base_brands
        queries = storage.read_table(world.catalog(number), "queries").to_pylist()
        assert sum(q["split"] == Split.TEST for q in queries) == SMALL.test_queries
        assert sum(q["split"] == Split.UNLABELED for q in queries) == SMALL.traffic_queries
        judged = storage.read_table(world.catalog(number), "judgments").to_pylist()
        assert {j["product_id"] for j in judged} <= set(now)
        # The controller's human set: round 0's train/dev judgments, fresh gate queries.
        human = storage.read_table(world.human(number), "queries").to_pylist()
        kept = [q for q in base_queries if q["split"] in (Split.TRAIN, Split.DEV)]
        assert [q for q in human if q["split"] != Split.TEST] == kept
        gate = {q["query_id"] for q in human if q["split"] == Split.TEST}
        assert len(gate) == SMALL.gate_queries
        human_judged = storage.read_table(world.human(number), "judgments").to_pylist()
        assert {j["query_id"] for j in human_judged} == gate | {q["query_id"] for q in kept}
        assert {j["product_id"] for j in human_judged if j["query_id"] in gate} <= set(now)
        before = now
    assert set(query_mix(SMALL.rounds, SMALL.rounds)) >= set(HARD_QUERY_TYPES)
    # Every query text is used once across rounds, test, traffic and the teacher's set.
    texts = [
        q
        for d in (world.base, world.teacher, *(world.catalog(n) for n in (1, 2, 3)))
        for q in storage.read_table(d, "queries").column("query").to_pylist()
    ] + [
        q["query"]
        for n in (1, 2, 3)
        for q in storage.read_table(world.human(n), "queries").to_pylist()
        if q["split"] == Split.TEST
    ]
    assert len(texts) == len(set(texts))
    # The teacher's world holds every type and brand the last round sells.
    teacher = products(world.teacher)
    assert set(teacher) == set(before)
