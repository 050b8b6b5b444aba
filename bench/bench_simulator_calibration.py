"""Calibration of the simulator's difficulty profiles: BM25 and the zero-shot bi-encoder
(NDCG@10 with graded and ESCI gains) on the test split of the default-size dataset
(3,000 products, 400 labeled queries, 60 test queries), per profile and seed.
Writes bench/results/simulator_calibration.json (docs/data.md quotes it).

    python bench/bench_simulator_calibration.py [--bi-encoder-seeds 1]

BM25 costs seconds per dataset; the bi-encoder about a minute on 2 loaded CPU cores,
so by default it runs on the first seed only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from training.data.simulator import PROFILES, simulate
from training.eval.evaluate import evaluate_scorer
from training.eval.scorer import build_scorer

PRODUCTS = 3000
QUERIES = 400
SEEDS = (0, 1, 2)
METRICS = ("ndcg@10", "ndcg_esci@10", "mrr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bi-encoder-seeds", type=int, default=1)
    args = parser.parse_args()
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for profile in PROFILES:
            for i, seed in enumerate(SEEDS):
                dataset = simulate(
                    Path(tmp) / f"{profile}-{seed}",
                    num_products=PRODUCTS,
                    num_queries=QUERIES,
                    seed=seed,
                    profile=profile,
                    show_progress=False,
                )
                models = ["bm25"] + (["bi-encoder"] if i < args.bi_encoder_seeds else [])
                for model in models:
                    start = time.perf_counter()
                    result = evaluate_scorer(build_scorer(model, dataset), dataset, split="test")
                    runs.append(
                        {
                            "profile": profile,
                            "seed": seed,
                            "model": model,
                            **{m: round(result[m], 4) for m in METRICS},
                            "test_queries": int(result["num_queries"]),
                            "seconds": round(time.perf_counter() - start, 1),
                        }
                    )
                    print(json.dumps(runs[-1]))
    summary = {}
    for profile in PROFILES:
        for model in ("bm25", "bi-encoder"):
            values = [r["ndcg@10"] for r in runs if r["profile"] == profile and r["model"] == model]
            if values:
                summary[f"{profile}/{model}"] = {
                    "ndcg@10_mean": round(float(np.mean(values)), 4),
                    "ndcg@10_min": min(values),
                    "ndcg@10_max": max(values),
                    "seeds": len(values),
                }
    result = {
        "products": PRODUCTS,
        "labeled_queries": QUERIES,
        "summary": summary,
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f} at the end",
    }
    out = Path(__file__).parent / "results" / "simulator_calibration.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
