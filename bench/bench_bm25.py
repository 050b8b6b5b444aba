"""BM25 (bm25s) at 100k simulated products: indexing time and per-query latency of
scoring the whole catalog and of top-100 retrieval. Writes bench/results/bm25.json."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from training.data import storage
from training.data.simulator import simulate
from training.eval.baselines import BM25Scorer

PRODUCTS = 100_000
QUERIES = 500


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        simulate(
            tmp, num_products=PRODUCTS, num_queries=QUERIES, num_unlabeled=0, show_progress=False
        )
        products = storage.read_table(tmp, "products").to_pylist()
        queries = storage.read_table(tmp, "queries").column("query").to_pylist()
    start = time.perf_counter()
    scorer = BM25Scorer(products)
    index_s = time.perf_counter() - start
    latencies = []
    for q in queries:
        t0 = time.perf_counter()
        scores = scorer.query_scores(q)
        np.argpartition(-scores, 100)[:100]
        latencies.append(time.perf_counter() - t0)
    ms = np.array(latencies) * 1000
    result = {
        "products": PRODUCTS,
        "queries": len(queries),
        "index_s": round(index_s, 2),
        "index_docs_per_s": round(PRODUCTS / index_s),
        "query_top100_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "query_top100_ms_p95": round(float(np.percentile(ms, 95)), 2),
        "queries_per_s": round(len(queries) / (ms.sum() / 1000), 1),
    }
    out = Path(__file__).parent / "results" / "bm25.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
