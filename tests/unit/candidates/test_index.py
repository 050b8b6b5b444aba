from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from services.candidate_generation.index import CatalogIndex, MiniLMEncoder, rrf_fuse


def _ids(hits: list) -> list[str]:
    return [h.product_id for h in hits]


def test_rrf_rewards_agreement_between_rankings() -> None:
    fused = dict(rrf_fuse([[1, 2, 3], [3, 2, 4]], rrf_k=60))
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62 + 1 / 62)
    # Found by both retrievers beats ranked first by only one of them.
    assert min(fused[2], fused[3]) > max(fused[1], fused[4])
    assert list(fused) == sorted(fused, key=lambda row: -fused[row])


@pytest.mark.parametrize("mode", ["bm25", "dense", "fused"])
def test_each_mode_ranks_the_matching_product_type_first(index: CatalogIndex, mode: str) -> None:
    hits = index.search("navy wool area rug", 9, mode)
    assert len(hits) == 9
    assert [h.rank for h in hits] == list(range(1, 10))
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    top = index.products_at([hits[0].row])[0]
    assert top["product_type"] == "area rug"
    assert top["attributes"]["color"] == "navy"


def test_dense_retrieval_matches_synonyms_bm25_cannot(index: CatalogIndex) -> None:
    # "couch" appears in no product text; only the embeddings know it means sofa.
    assert index.search("couch", 5, "bm25") == []
    dense_top = index.products_at([h.row for h in index.search("couch", 5, "dense")])
    assert all(p["product_type"] == "sofa" for p in dense_top)
    fused = index.search("couch", 5, "fused")
    assert len(fused) == 5


def test_search_rejects_bad_arguments(index: CatalogIndex) -> None:
    with pytest.raises(ValueError, match="k:"):
        index.search("sofa", 0)
    with pytest.raises(ValueError, match="mode:"):
        index.search("sofa", 5, "sparse")  # type: ignore[arg-type]


def test_save_and_load_round_trip(
    index: CatalogIndex, encoder: MiniLMEncoder, tmp_path: Path
) -> None:
    index.save(tmp_path / "idx")
    loaded = CatalogIndex.load(tmp_path / "idx", encoder)
    assert loaded.version == index.version
    assert len(loaded) == len(index)
    for query in ("red leather sofa", "oak table lamp"):
        assert _ids(loaded.search(query, 10)) == _ids(index.search(query, 10))


def test_load_without_manifest_names_the_problem(encoder: MiniLMEncoder, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        CatalogIndex.load(tmp_path, encoder)


def test_upsert_replaces_changed_and_adds_new_products(index: CatalogIndex) -> None:
    before = index.version
    changed = {
        "product_id": "p000",
        "title": "Zebra striped beanbag chair",
        "product_type": "beanbag",
    }
    added = {
        "product_id": "n001",
        "title": "Giraffe print floor cushion",
        "product_type": "cushion",
    }
    version = index.upsert([changed, added])
    assert version != before and index.version == version
    assert len(index) == 91 and "n001" in index
    for mode in ("bm25", "dense", "fused"):
        hits = index.search("zebra beanbag", 3, mode)
        assert hits[0].product_id == "p000", mode
        assert index.products_at([hits[0].row])[0]["title"].startswith("Zebra")
        # The old version of p000 is gone from every retriever, not just shadowed.
        assert _ids(hits).count("p000") == 1
    hits = index.search("Acme red leather sofa", 91, "dense")
    assert hits[0].product_id != "p000"
    assert all(index.alive[h.row] for h in hits) and _ids(hits).count("p000") == 1


def test_upsert_applied_twice_changes_nothing_the_second_time(index: CatalogIndex) -> None:
    # A redelivered ProductChanged (at-least-once) must not grow the index again.
    change = [
        {"product_id": "p001", "title": "Zebra striped beanbag chair", "product_type": "beanbag"},
        {"product_id": "n002", "title": "Giraffe print floor cushion", "product_type": "cushion"},
    ]
    version = index.upsert(change)
    rows = len(index.alive)
    assert index.upsert(change) == version
    assert len(index.alive) == rows and len(index) == 91
    assert index.upsert([{**change[0], "title": "Zebra striped beanbag"}]) != version


def test_upsert_compacts_after_many_replacements(
    index: CatalogIndex, catalog: list[dict[str, Any]]
) -> None:
    edited = [{**p, "title": p["title"] + " deluxe"} for p in catalog[:40]]
    index.upsert(edited)
    assert len(index.alive) == len(index) == 90  # compaction dropped the 40 dead rows
    hits = index.search("deluxe", 40, "bm25")
    assert {h.product_id for h in hits} == {p["product_id"] for p in edited}


def test_build_rejects_invalid_products(encoder: MiniLMEncoder) -> None:
    with pytest.raises(ValueError, match=r"products\[1\]\.title"):
        CatalogIndex.build(
            [{"product_id": "a", "title": "x"}, {"product_id": "b", "title": ""}], encoder
        )
    with pytest.raises(ValueError, match="duplicate 'a'"):
        CatalogIndex.build(
            [{"product_id": "a", "title": "x"}, {"product_id": "a", "title": "y"}], encoder
        )
    with pytest.raises(ValueError, match="missing column"):
        CatalogIndex.build(pa.table({"product_id": ["a"]}), encoder)
