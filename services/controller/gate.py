"""The gate: candidate vs serving student on one gate set, with bootstrap intervals.

The gate set is the human-labeled held-out queries of the dataset plus a fresh slice
of recent traffic the teacher labeled and no candidate trained on (grade = the teacher's
expected grade, rounded). Both students re-rank every gate query's judged products; the
per-query NDCG@10 values are resampled (queries with replacement) for 95% intervals,
and the candidate - serving difference is resampled *paired* (same queries both sides).

Rules (docs/loop.md), all must hold to promote:

1. quality: the lower bound of the paired NDCG@10 difference is >= -tolerance
   (non-inferiority; with no serving student there is nothing to compare and it holds);
2. latency: the candidate's p99 per scoring request is within the budget;
3. int8: when the student serves int8, the int8 export's scores keep a mean per-query
   Spearman >= the minimum against fp32 on the gate set (always measured, gated only then).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contracts.schema import NUM_GRADES
from services.controller.ledger import Metric
from training.data import storage
from training.eval import metrics
from training.eval.intervals import bootstrap_ci
from training.eval.scorer import Scorer

HUMAN = "human"
TRAFFIC = "traffic"
K = 10
NDCG = f"ndcg@{K}"


@dataclass
class GateSet:
    queries: dict[str, str] = field(default_factory=dict)  # query_id -> text
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # query_id -> {pid: grade}
    products: dict[str, dict[str, Any]] = field(default_factory=dict)  # product_id -> row
    sources: dict[str, str] = field(default_factory=dict)  # query_id -> human | traffic

    def pairs(self) -> list[tuple[str, str]]:
        return [(q, p) for q in sorted(self.qrels) for p in sorted(self.qrels[q])]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for source in self.sources.values():
            out[f"gate_queries.{source}"] += 1
        return dict(out)


def grade_of(expected_score: float) -> int:
    """The teacher's expected grade as an integer grade (0..3)."""
    return int(min(NUM_GRADES - 1, max(0, round(expected_score))))


def build_gate_set(
    dataset_dir: Path | str,
    split: str,
    traffic_labels: Iterable[Mapping[str, Any]],
    traffic_products: Mapping[str, Mapping[str, Any]],
) -> GateSet:
    """Human-judged `split` queries of `dataset_dir` plus the teacher-labeled
    `traffic_labels` rows (query_id, query, product_id, expected_score); a traffic
    product's text comes from `traffic_products` (the label store's newest), else from
    the dataset's catalog."""
    gate = GateSet()
    traffic_labels = list(traffic_labels)
    queries = storage.read_table(dataset_dir, "queries", ["query_id", "query"], split).to_pylist()
    gate.queries = {q["query_id"]: q["query"] for q in queries}
    for j in storage.read_table(
        dataset_dir, "judgments", ["query_id", "product_id", "grade"], split
    ).to_pylist():
        gate.qrels.setdefault(j["query_id"], {})[j["product_id"]] = int(j["grade"])
        gate.sources[j["query_id"]] = HUMAN
    judged = {p for products in gate.qrels.values() for p in products}
    wanted = judged | {label["product_id"] for label in traffic_labels}
    catalog = {
        row["product_id"]: row
        for row in storage.read_table(dataset_dir, "products").to_pylist()
        if row["product_id"] in wanted
    }
    gate.products = {pid: row for pid, row in catalog.items() if pid in judged}
    for label in traffic_labels:
        qid, pid = label["query_id"], label["product_id"]
        if qid in gate.sources and gate.sources[qid] == HUMAN:
            continue  # a human-judged query keeps its human grades
        product = traffic_products.get(pid) or catalog.get(pid)
        if product is None:
            raise ValueError(f"gate traffic label ({qid}, {pid}): product_id is not in products")
        gate.queries[qid] = label["query"]
        gate.qrels.setdefault(qid, {})[pid] = grade_of(label["expected_score"])
        gate.products[pid] = dict(product)
        gate.sources[qid] = TRAFFIC
    if not gate.qrels:
        raise ValueError(f"gate set is empty: {dataset_dir} has no {split!r} judgments")
    return gate


def score_run(scorer: Scorer, gate: GateSet, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """``{query_id: {product_id: score}}`` of every gate pair."""
    pairs = gate.pairs()
    run: dict[str, dict[str, float]] = defaultdict(dict)
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        scores = scorer.score_pairs(
            [gate.queries[q] for q, _ in batch], [gate.products[p] for _, p in batch]
        )
        for (q, p), s in zip(batch, np.asarray(scores).tolist(), strict=True):
            run[q][p] = float(s)
    return dict(run)


def measure_p99_ms(scorer: Scorer, gate: GateSet, pairs_per_request: int, requests: int) -> float:
    """p99 wall time (ms) of scoring one request of `pairs_per_request` gate pairs."""
    pairs = gate.pairs()
    timings = []
    for i in range(requests + 1):
        start = (i * pairs_per_request) % max(1, len(pairs))
        batch = (pairs * (pairs_per_request // max(1, len(pairs)) + 2))[
            start : start + pairs_per_request
        ]
        queries = [gate.queries[q] for q, _ in batch]
        products = [gate.products[p] for _, p in batch]
        began = time.perf_counter()
        scorer.score_pairs(queries, products)
        if i:  # the first request warms caches and allocators up
            timings.append((time.perf_counter() - began) * 1000)
    return float(np.percentile(timings, 99))


@dataclass(frozen=True)
class GateRules:
    ndcg_tolerance: float
    p99_budget_ms: float
    int8_serving: bool
    int8_min_spearman: float
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass
class GateResult:
    promote: bool
    reason: str
    metrics: dict[str, Metric]
    candidate_p99_ms: float
    serving_p99_ms: float | None


def per_query_ndcg(gate: GateSet, run: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """NDCG@10 of each gate query (sorted by query id; 0 for a query the run misses)."""
    per_query = metrics.ndcg_per_query(gate.qrels, run, K)
    return np.array([per_query.get(q, 0.0) for q in sorted(gate.qrels)])


def judge(
    gate: GateSet,
    rules: GateRules,
    candidate_run: Mapping[str, Mapping[str, float]],
    candidate_p99_ms: float,
    serving_run: Mapping[str, Mapping[str, float]] | None = None,
    serving_p99_ms: float | None = None,
    int8_spearman: float | None = None,
) -> GateResult:
    """Apply the gate rules to scored runs; every failing rule is named in the reason."""

    def metric(values: np.ndarray, offset: int) -> Metric:
        ci = bootstrap_ci(values, rules.bootstrap_samples, rules.confidence, rules.seed + offset)
        return Metric(float(values.mean()), ci)

    cand = per_query_ndcg(gate, candidate_run)
    found: dict[str, Metric] = {f"candidate.{NDCG}": metric(cand, 0)}
    sources = np.array([gate.sources[q] for q in sorted(gate.qrels)])
    for source in (HUMAN, TRAFFIC):
        if (sources == source).any():
            found[f"candidate.{NDCG}.{source}"] = metric(cand[sources == source], 1)
    failures: list[str] = []
    passes: list[str] = []
    if serving_run is not None:
        serv = per_query_ndcg(gate, serving_run)
        found[f"serving.{NDCG}"] = metric(serv, 2)
        for source in (HUMAN, TRAFFIC):
            if (sources == source).any():
                found[f"serving.{NDCG}.{source}"] = metric(serv[sources == source], 3)
        # Paired: the same resampled queries on both sides (same seed, same indices).
        delta = metric(cand - serv, 4)
        found[f"delta.{NDCG}"] = delta
        assert delta.ci95 is not None
        text = (
            f"NDCG@10 {cand.mean():.4f} vs serving {serv.mean():.4f}, difference "
            f"{delta.value:+.4f} (95% CI {delta.ci95[0]:+.4f}..{delta.ci95[1]:+.4f}, "
            f"tolerance {rules.ndcg_tolerance})"
        )
        # Non-inferiority: the whole interval must clear -tolerance. A candidate ahead
        # on average but with too wide an interval is refused too, with its own words.
        if delta.ci95[0] >= -rules.ndcg_tolerance:
            passes.append(text)
        elif delta.value < -rules.ndcg_tolerance:
            failures.append(f"worse than serving: {text}")
        else:
            failures.append(f"not shown within tolerance of serving (CI too wide): {text}")
    else:
        passes.append(f"NDCG@10 {cand.mean():.4f}, no serving student to compare with")
    found["candidate.p99_ms"] = Metric(candidate_p99_ms)
    if serving_p99_ms is not None:
        found["serving.p99_ms"] = Metric(serving_p99_ms)
    latency = f"p99 {candidate_p99_ms:.1f} ms (budget {rules.p99_budget_ms:g} ms)"
    if candidate_p99_ms <= rules.p99_budget_ms:
        passes.append(latency)
    else:
        failures.append(f"too slow: {latency}")
    if int8_spearman is not None:
        found["int8.spearman"] = Metric(int8_spearman)
        text = f"int8 Spearman {int8_spearman:.4f} (min {rules.int8_min_spearman})"
        if not rules.int8_serving:
            passes.append(f"{text}, not gated: int8 not served")
        elif int8_spearman >= rules.int8_min_spearman:
            passes.append(text)
        else:
            failures.append(f"int8 export drifts: {text}")
    elif rules.int8_serving:
        failures.append("int8 export missing while int8 serving is on")
    if failures:
        return GateResult(False, "; ".join(failures), found, candidate_p99_ms, serving_p99_ms)
    return GateResult(True, "; ".join(passes), found, candidate_p99_ms, serving_p99_ms)


def evaluate(
    gate: GateSet,
    rules: GateRules,
    candidate: Scorer,
    serving: Scorer | None,
    *,
    pairs_per_request: int,
    requests: int,
    int8_spearman: float | None = None,
) -> GateResult:
    """Score both students on the gate set, time them and :func:`judge`."""
    candidate_run = score_run(candidate, gate)
    candidate_p99 = measure_p99_ms(candidate, gate, pairs_per_request, requests)
    serving_run = score_run(serving, gate) if serving is not None else None
    serving_p99 = (
        measure_p99_ms(serving, gate, pairs_per_request, requests) if serving is not None else None
    )
    return judge(gate, rules, candidate_run, candidate_p99, serving_run, serving_p99, int8_spearman)


class OnnxScorer:
    """Scores pairs with a cross-encoder export's ONNX graph, as Triton serves it."""

    def __init__(self, export_dir: Path, onnx_file: str, threads: int = 1) -> None:
        from transformers import AutoTokenizer

        from contracts.artifacts import TOKENIZER_DIR, read_student_spec
        from training.export.onnx_export import input_names, session

        self.spec = read_student_spec(export_dir)
        self.name = f"{self.spec.model_ref}:{onnx_file}"
        self.tokenizer = AutoTokenizer.from_pretrained(export_dir / TOKENIZER_DIR)
        self.input_names = input_names(self.tokenizer)
        self.session = session(export_dir / onnx_file, threads=threads)

    def score_pairs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        from contracts.text import product_text

        encoded = self.tokenizer(
            list(queries),
            [product_text(dict(p), self.spec.text_fields) for p in products],
            truncation="longest_first",
            max_length=self.spec.max_length,
            padding=True,
            return_tensors="np",
        )
        inputs = {n: encoded[n].astype(np.int64) for n in self.input_names}
        return np.asarray(self.session.run(None, inputs)[0]).reshape(-1)


def int8_spearman(export_dir: Path, gate: GateSet) -> float:
    """Mean per-query Spearman of the int8 export's scores against the fp32 export's."""
    from contracts.artifacts import CROSS_ENCODER_INT8, CROSS_ENCODER_ONNX

    int8 = score_run(OnnxScorer(export_dir, CROSS_ENCODER_INT8), gate)
    fp32 = score_run(OnnxScorer(export_dir, CROSS_ENCODER_ONNX), gate)
    return metrics.rank_correlation(int8, fp32)["spearman"]
