"""Benchmark: is a trained teacher clearly above BM25 on the hard simulator profile?

Evaluates BM25, the zero-shot bi-encoder and a teacher checkpoint on a dataset's test
split, with bootstrap 95% intervals over the test queries and the paired interval of
teacher minus BM25 (``training.eval.intervals``), and records the teacher's learning
curve (dev NDCG@10 and NLL at each evaluation, from its ``teacher.json``) next to BM25's
dev NDCG@10. The demo's default run trains the teacher this measures (hard profile, 50
human-labeled train queries, 6 epochs, every dev pair).

    python bench/bench_teacher_hard.py --dataset-dir RUN/dataset --teacher RUN/teacher

Writes ``bench/results/teacher_hard.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from run_record import machine

from training.data.storage import MANIFEST
from training.eval.evaluate import evaluate_split
from training.eval.intervals import estimate, paired_difference
from training.eval.scorer import build_scorer
from training.teacher import eval_kind as _teacher_kind  # noqa: F401  (registers teacher=)

RESULTS = Path(__file__).parent / "results" / "teacher_hard.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    models = {
        "bm25": "bm25",
        "bi-encoder": "bi-encoder",
        "teacher": f"teacher={args.teacher}",
    }
    bm25_dev = evaluate_split(build_scorer("bm25", args.dataset_dir), args.dataset_dir, "dev")
    trained = json.loads((args.teacher / "teacher.json").read_text())
    per_query, metrics = {}, {}
    for name, spec in models.items():
        print(f"evaluating {name}", flush=True)
        evaluation = evaluate_split(
            build_scorer(spec, args.dataset_dir), args.dataset_dir, args.split
        )
        per_query[name] = [evaluation.per_query["ndcg@10"]]
        metrics[name] = {
            "ndcg@10": estimate(per_query[name]).as_dict(),
            "ndcg_esci@10": evaluation.metrics["ndcg_esci@10"],
        }
    result = {
        "benchmark": "teacher_hard",
        "dataset": str(args.dataset_dir),
        "manifest": json.loads((args.dataset_dir / MANIFEST).read_text()),
        "teacher": str(args.teacher),
        "split": args.split,
        "test_queries": len(per_query["bm25"][0]),
        "models": metrics,
        "teacher_minus_bm25": paired_difference(per_query["teacher"], per_query["bm25"]).as_dict(),
        "teacher_training": {
            **{k: trained.get(k) for k in ("train_pairs", "steps", "template", "max_length")},
            "dev_history": trained.get("history"),
            "bm25_dev_ndcg@10": bm25_dev.metrics["ndcg@10"],
        },
        "teacher_minus_bi_encoder": paired_difference(
            per_query["teacher"], per_query["bi-encoder"]
        ).as_dict(),
        "machine": machine(load_before),
        "wall_s": time.monotonic() - started,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("models", "teacher_minus_bm25")}, indent=2))


if __name__ == "__main__":
    main()
