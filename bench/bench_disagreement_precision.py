"""Precision of the disagreement monitor's flags against random sampling, on the simulator.

A small simulated catalog is written with one noiseless rater, so each judgment's grade
is the simulator's rule grade: the ground truth. Its judged pools are the served
traffic: one `ServedSample` per labeled query (the query's pool of products, as
student-inference publishes them on relevance.served.v1), fed in consumer-sized batches
through the monitor's real `DisagreementHandler` (in-process; the Kafka path is covered by
tests/integration/relabel).

* Teacher: an oracle-ish one, the simulator's own rater model (`simulate_raters`, five
  raters at the simulator's default noise of 0.15) on the rule grades; its expected grade
  is the vote shares' mean. It stands in for the LLM teacher, which approximates the
  raters; no model is trained.
* Weakened students (`SCENARIOS`): the rule grade plus Gaussian noise, clipped to [0, 3],
  and on a known share of queries the ranking turned upside down (3 - grade, plus the
  same noise). `diffuse_noise` is a little wrong everywhere (sd 0.6, no broken query);
  `broken_queries` is mostly right (sd 0.35) and badly wrong on 20% of the queries.

A pair is *wrong* when |student expected grade - rule grade| >= 1 (the student is at
least a whole grade off). Precision is the share of flagged pairs that are wrong; the
baseline samples as many pairs uniformly from all served pairs, over several seeds.

    python bench/bench_disagreement_precision.py

writes bench/results/disagreement_precision.json (docs/relabel-streams.md quotes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from relevance.v1 import common_pb2, topics_pb2

from contracts.schema import NUM_GRADES
from services.core import bus
from services.disagreement_monitor.service import DisagreementHandler, MonitorSettings, ServedPair
from training.data import storage
from training.data.simulator import simulate, simulate_raters, vote_shares

RESULT = Path(__file__).parent / "results" / "disagreement_precision.json"
WRONG_GAP = 1.0


class TableTeacher:
    """The oracle-ish teacher: expected grades by (query_id, product_id)."""

    def __init__(self, scores: dict[tuple[str, str], float]) -> None:
        self.scores = scores
        self.judged = 0

    def expected_scores(self, pairs: Sequence[ServedPair]) -> tuple[list[float], str]:
        self.judged += len(pairs)
        return [self.scores[(p.query_id, p.product.product_id)] for p in pairs], "raters"


class FlaggedPairs:
    """A publisher that keeps the (query_id, product_id) of each disagreement request."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def publish(self, topic: Any, key: str, message: topics_pb2.RelabelRequest) -> None:
        if message.HasField("disagreement"):
            self.pairs.append((message.disagreement.query_id, message.disagreement.product_id))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


SCENARIOS = {
    # Wrong everywhere a little: no query is broken, the noise alone puts pairs a grade off.
    "diffuse_noise": {"student_noise": 0.6, "corrupt_share": 0.0},
    # Mostly right, but the ranking of a known share of queries is upside down.
    "broken_queries": {"student_noise": 0.35, "corrupt_share": 0.2},
}


def measure(
    student_noise: float,
    corrupt_share: float,
    truth: np.ndarray,
    teacher_scores: np.ndarray,
    query_ids: list[str],
    product_ids: list[str],
    product_by_id: dict[str, dict[str, Any]],
    text_by_query: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Feeds one weakened student's served samples through the monitor; its precision."""
    rng = np.random.default_rng([args.sim_seed, 200])
    keys = list(zip(query_ids, product_ids, strict=True))
    served_queries = sorted(set(query_ids))
    corrupted = set(
        rng.choice(
            served_queries, round(corrupt_share * len(served_queries)), replace=False
        ).tolist()
    )
    in_corrupted = np.array([q in corrupted for q in query_ids])
    noise = rng.normal(0.0, student_noise, len(truth))
    student_scores = np.clip(
        np.where(in_corrupted, (NUM_GRADES - 1) - truth, truth) + noise, 0.0, NUM_GRADES - 1
    )
    wrong = np.abs(student_scores - truth) >= WRONG_GAP
    index = {key: i for i, key in enumerate(keys)}
    assert len(index) == len(keys), "a pair judged twice in the simulated pools"

    # Served samples in the order a consumer sees them: one per query, its pool as served.
    by_query: dict[str, list[int]] = {}
    for i, q in enumerate(query_ids):
        by_query.setdefault(q, []).append(i)
    deliveries: list[bus.Delivery[topics_pb2.ServedSample]] = []
    for q in rng.permutation(served_queries):
        sample = topics_pb2.ServedSample(
            request_id=f"r-{q}",
            query_id=q,
            query=text_by_query[q],
            student=common_pb2.ModelRef(name="student", version="weakened"),
        )
        for i in by_query[q]:
            p = product_by_id[product_ids[i]]
            sample.products.add(
                product_id=p["product_id"],
                title=p["title"],
                product_type=p["product_type"] or "",
                brand=p["brand"] or "",
                score=float(student_scores[i]),
            )
        deliveries.append(bus.Delivery(record=None, message=sample))  # type: ignore[arg-type]

    own = MonitorSettings(pairs_per_second=1e9)  # no teacher to spare in-process
    teacher = TableTeacher(dict(zip(keys, teacher_scores.tolist(), strict=True)))
    flagged = FlaggedPairs()
    handler = DisagreementHandler(teacher, flagged, own, known=None)  # type: ignore[arg-type]
    for start in range(0, len(deliveries), args.samples_per_batch):
        rejected = handler(deliveries[start : start + args.samples_per_batch])
        assert not rejected, rejected
    assert teacher.judged == len(keys), (teacher.judged, len(keys))  # every served pair judged

    flagged_idx = np.array([index[key] for key in flagged.pairs])
    n = len(flagged_idx)
    precision = float(wrong[flagged_idx].mean())
    random_precisions = [
        float(wrong[np.random.default_rng(seed).choice(len(keys), n, replace=False)].mean())
        for seed in range(args.random_seeds)
    ]
    return {
        "student": f"rule grade + N(0, {student_noise}) clipped to [0, 3]; ranking reversed "
        f"(3 - grade) on {corrupt_share:.0%} of queries",
        "wrong_pairs_share": round(float(wrong.mean()), 4),
        "flagged_pairs": n,
        "monitor_precision": round(precision, 4),
        "monitor_recall_of_wrong_pairs": round(float(wrong[flagged_idx].sum() / wrong.sum()), 4),
        "flagged_share_from_corrupted_queries": round(float(in_corrupted[flagged_idx].mean()), 4),
        "random_precision": {
            "mean": round(float(np.mean(random_precisions)), 4),
            "min": round(min(random_precisions), 4),
            "max": round(max(random_precisions), 4),
        },
        "precision_lift_over_random": round(precision / float(np.mean(random_precisions)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--sim-seed", type=int, default=0)
    parser.add_argument("--samples-per-batch", type=int, default=20)
    parser.add_argument("--random-seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        # One rater with no noise: the stored grade is the rule grade (ground truth).
        simulate(
            tmp,
            num_products=args.products,
            num_queries=args.queries,
            num_unlabeled=0,
            seed=args.sim_seed,
            raters=1,
            rater_noise=0.0,
            show_progress=False,
        )
        products = storage.read_table(tmp, "products").to_pylist()
        queries = storage.read_table(tmp, "queries", ["query_id", "query"]).to_pylist()
        judgments = storage.read_table(tmp, "judgments", ["query_id", "product_id", "grade"])

    truth = judgments.column("grade").to_numpy().astype(float)
    votes = simulate_raters(
        truth.astype(np.int8), 5, 0.15, np.random.default_rng([args.sim_seed, 100])
    )
    teacher_scores = vote_shares(votes) @ np.arange(NUM_GRADES)
    query_ids = judgments.column("query_id").to_pylist()
    scenarios = {
        name: measure(
            **knobs,
            truth=truth,
            teacher_scores=teacher_scores,
            query_ids=query_ids,
            product_ids=judgments.column("product_id").to_pylist(),
            product_by_id={p["product_id"]: p for p in products},
            text_by_query={q["query_id"]: q["query"] for q in queries},
            args=args,
        )
        for name, knobs in SCENARIOS.items()
    }
    own = MonitorSettings()
    result = {
        "settings": {
            "products": args.products,
            "labeled_queries": args.queries,
            "simulator_seed": args.sim_seed,
            "ground_truth": "simulator rule grade (one noiseless rater)",
            "teacher": "simulator rater model: expected grade of 5 raters, rater_noise 0.15",
            "wrong": f"|student expected grade - rule grade| >= {WRONG_GAP}",
            "samples_per_handler_call": args.samples_per_batch,
            "monitor": {
                "top_share": own.top_share,
                "min_gap": own.min_gap,
                "gap_window": own.gap_window,
            },
            "random_seeds": args.random_seeds,
        },
        "served_pairs": len(query_ids),
        "served_queries": len(set(query_ids)),
        "teacher_wrong_share": round(
            float((np.abs(teacher_scores - truth) >= WRONG_GAP).mean()), 4
        ),
        "scenarios": scenarios,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_1m_before": round(load_before[0], 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
