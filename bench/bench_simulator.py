"""Simulator throughput: products/s (catalog + listings) and judged pairs/s (queries,
pools, rules, raters). Writes bench/results/simulator.json."""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

from training.data import storage
from training.data.simulator import simulate

PRODUCTS = 100_000
QUERIES = 2_000


def _run(num_queries: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        simulate(
            tmp,
            num_products=PRODUCTS,
            num_queries=num_queries,
            num_unlabeled=0,
            show_progress=False,
        )
        return time.perf_counter() - start, storage.read_manifest(tmp)["counts"]["judgments"]


def main() -> None:
    # A run with the fewest queries is (almost) all catalog and listings; the
    # difference to a full run is the query, pool, rule and rater work.
    base_s, base_pairs = _run(3)
    total_s, pairs = _run(QUERIES)
    result = {
        "products": PRODUCTS,
        "labeled_queries": QUERIES,
        "judged_pairs": pairs,
        "products_per_s": round(PRODUCTS / base_s),
        "judged_pairs_per_s": round((pairs - base_pairs) / (total_s - base_s)),
        "simulate_total_s": round(total_s, 2),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    out = Path(__file__).parent / "results" / "simulator.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
