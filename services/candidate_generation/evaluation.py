"""Recall@k of Exact products: how much of what the teacher should see retrieval finds."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.compute as pc
from rich.progress import Progress

from contracts.schema import Grade
from services.candidate_generation.index import MODES, CatalogIndex, Mode
from training.data import storage


def exact_recall(
    index: CatalogIndex,
    dataset_dir: str | Path,
    k: int = 100,
    split: str = "test",
    modes: tuple[Mode, ...] = MODES,
    batch_size: int = 128,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Mean recall@k of Exact products per retrieval mode, over queries that have one.

    Returns ``{mode: {"recall": r, "queries": n, "k": k}}``.
    """
    judgments = storage.read_table(
        dataset_dir, "judgments", ["query_id", "product_id", "grade"], filter_split=split
    )
    judgments = judgments.filter(pc.equal(judgments["grade"], int(Grade.EXACT)))
    exact: dict[str, set[str]] = defaultdict(set)
    for query_id, product_id in zip(
        judgments["query_id"].to_pylist(), judgments["product_id"].to_pylist(), strict=True
    ):
        exact[query_id].add(product_id)
    queries = storage.read_table(dataset_dir, "queries", ["query_id", "query"], filter_split=split)
    pairs = [
        (q, text)
        for q, text in zip(
            queries["query_id"].to_pylist(), queries["query"].to_pylist(), strict=True
        )
        if exact.get(q)
    ]
    if not pairs:
        raise ValueError(f"split: no {split!r} query in {dataset_dir} has an Exact judgment")
    totals = dict.fromkeys(modes, 0.0)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"recall@{k}", total=len(pairs))
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            texts = [text for _, text in chunk]
            # Encode once, reuse for the dense and fused rankings.
            embeddings = index.encode_queries(texts) if set(modes) - {"bm25"} else None
            for mode in modes:
                rankings = index.search_batch(texts, k, mode, query_embeddings=embeddings)
                for (query_id, _), hits in zip(chunk, rankings, strict=True):
                    found = {h.product_id for h in hits} & exact[query_id]
                    totals[mode] += len(found) / len(exact[query_id])
            bar.advance(task, len(chunk))
    return {
        mode: {"recall": totals[mode] / len(pairs), "queries": len(pairs), "k": k} for mode in modes
    }
