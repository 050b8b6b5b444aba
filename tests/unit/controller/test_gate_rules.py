"""The gate's rules on hand-made runs: each failing rule is named, each passing one too."""

from __future__ import annotations

import pytest

from services.controller.gate import (
    HUMAN,
    TRAFFIC,
    GateRules,
    GateSet,
    grade_of,
    judge,
)

RULES = GateRules(ndcg_tolerance=0.01, p99_budget_ms=50, int8_serving=False, int8_min_spearman=0.99)


def _gate(queries: int = 40) -> GateSet:
    gate = GateSet()
    for q in range(queries):
        qid = f"q{q}"
        gate.queries[qid] = f"query {q}"
        gate.qrels[qid] = {f"p{p}": (3 if p == 0 else 0) for p in range(5)}
        gate.sources[qid] = HUMAN if q % 2 else TRAFFIC
    return gate


def _run(gate: GateSet, correct: set[str]) -> dict[str, dict[str, float]]:
    """Ranks the relevant product first for the `correct` queries, last for the others."""
    return {
        q: {p: (1.0 if (p == "p0") == (q in correct) else 0.0) + int(p[1:]) * 1e-3 for p in judged}
        for q, judged in gate.qrels.items()
    }


def test_a_clearly_worse_candidate_is_refused_with_the_numbers() -> None:
    gate = _gate()
    serving = _run(gate, set(gate.qrels))
    candidate = _run(gate, {q for i, q in enumerate(gate.qrels) if i % 4 == 0})
    result = judge(gate, RULES, candidate, 5.0, serving, 5.0)
    assert not result.promote
    assert result.reason.startswith("worse than serving: NDCG@10")
    delta = result.metrics["delta.ndcg@10"]
    assert delta.value < 0 and delta.ci95[1] < -RULES.ndcg_tolerance
    assert {"candidate.ndcg@10.human", "candidate.ndcg@10.traffic"} <= set(result.metrics)


def test_a_candidate_ahead_on_average_but_unproven_is_refused_as_such() -> None:
    gate = _gate()
    served_right = {q for i, q in enumerate(gate.qrels) if i % 2 == 0}
    serving = _run(gate, served_right)
    # Right on 3 queries serving gets wrong, wrong on 2 it gets right: ahead by a
    # little, with an interval reaching well below the tolerance.
    candidate = _run(gate, (served_right - {"q0", "q2"}) | {"q1", "q3", "q5"})
    result = judge(gate, RULES, candidate, 5.0, serving, 5.0)
    delta = result.metrics["delta.ndcg@10"]
    assert delta.value > 0 and delta.ci95[0] < -RULES.ndcg_tolerance
    assert not result.promote
    assert result.reason.startswith("not shown within tolerance of serving (CI too wide)")


def test_an_equal_candidate_passes_and_a_slow_one_does_not() -> None:
    gate = _gate()
    run = _run(gate, set(gate.qrels))
    passed = judge(gate, RULES, run, 49.0, run, 30.0)
    assert passed.promote and passed.metrics["delta.ndcg@10"].ci95 == (0.0, 0.0)
    slow = judge(gate, RULES, run, 51.0, run, 30.0)
    assert not slow.promote and "too slow: p99 51.0 ms (budget 50 ms)" in slow.reason


def test_int8_drift_gates_only_when_int8_serves() -> None:
    gate = _gate()
    run = _run(gate, set(gate.qrels))
    recorded = judge(gate, RULES, run, 5.0, run, 5.0, int8_spearman=0.9)
    assert recorded.promote and "not gated: int8 not served" in recorded.reason
    assert recorded.metrics["int8.spearman"].value == 0.9
    int8_rules = GateRules(0.01, 50, int8_serving=True, int8_min_spearman=0.99)
    refused = judge(gate, int8_rules, run, 5.0, run, 5.0, int8_spearman=0.9)
    assert not refused.promote and "int8 export drifts" in refused.reason
    assert judge(gate, int8_rules, run, 5.0, run, 5.0, int8_spearman=0.995).promote


def test_first_candidate_has_nothing_to_compare_with() -> None:
    gate = _gate()
    result = judge(gate, RULES, _run(gate, set(gate.qrels)), 5.0)
    assert result.promote and "no serving student" in result.reason
    assert "delta.ndcg@10" not in result.metrics


def test_teacher_expected_score_rounds_to_a_grade() -> None:
    assert [grade_of(s) for s in (-0.2, 0.49, 0.5001, 2.6, 3.7)] == [0, 0, 1, 3, 3]


def test_gate_set_takes_traffic_products_from_the_store_else_the_catalog(tmp_path) -> None:
    from services.controller.gate import build_gate_set
    from training.data import storage

    dataset = tmp_path / "dataset"
    catalog = [
        {"product_id": f"p{i}", "title": title}
        for i, title in enumerate(["acme sofa", "nova sofa", "acme lamp"])
    ]
    storage.write_manifest(dataset, source="gate-test")
    storage.write_table(dataset, "products", catalog)
    storage.write_table(
        dataset, "queries", [{"query_id": "h1", "query": "acme sofa", "split": "test"}]
    )
    # The human test query judges p0 only: p1 and p2 are in the catalog, not in judgments.
    storage.write_table(
        dataset,
        "judgments",
        [{"query_id": "h1", "product_id": "p0", "grade": 3, "grade_probs": [0, 0, 0, 1]}],
    )
    label = {"query_id": "t1", "query": "nova couch", "expected_score": 2.6}
    renamed = {"product_id": "p2", "title": "acme reading light"}
    gate = build_gate_set(
        dataset,
        "test",
        [
            {**label, "product_id": "p1"},  # unchanged: the catalog's text
            {**label, "product_id": "p2", "expected_score": 0.2},  # renamed: the store's text
            {**label, "product_id": "p-new"},  # new: only in the store
        ],
        {"p2": renamed, "p-new": {"product_id": "p-new", "title": "kappa couch"}},
    )
    assert gate.sources == {"h1": HUMAN, "t1": TRAFFIC}
    assert gate.qrels["t1"] == {"p1": 3, "p2": 0, "p-new": 3}
    assert [gate.products[p]["title"] for p in ("p0", "p1", "p2", "p-new")] == [
        "acme sofa",
        "nova sofa",
        "acme reading light",
        "kappa couch",
    ]
    with pytest.raises(ValueError, match="product_id is not in products"):
        build_gate_set(dataset, "test", [{**label, "product_id": "p-gone"}], {})
