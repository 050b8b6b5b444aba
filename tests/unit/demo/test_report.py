from __future__ import annotations

import json
from pathlib import Path

from ops.demo.report import ModelResult, answer, compare_students, write_report

QUERIES = [f"q{i:02d}" for i in range(30)]


def _result(model: str, family: str, augmented: int | None, ndcg: float) -> ModelResult:
    interval = (ndcg - 0.01, ndcg + 0.01)
    return ModelResult(
        model, family, augmented, ndcg, ndcg, ndcg, None, 10.0, 12.0, ndcg10_ci=interval, seeds=3
    )


def _per_query(ndcg: float, seeds: int) -> list[dict[str, float]]:
    # Query difficulty varies; each model is `ndcg` on average, seeds differ a little.
    spread = [((i % 5) - 2) * 0.02 for i in range(len(QUERIES))]
    return [
        {q: ndcg + d + 0.001 * s for q, d in zip(QUERIES, spread, strict=True)}
        for s in range(seeds)
    ]


RESULTS = [
    _result("bm25", "baseline", None, 0.79),
    _result("teacher", "teacher", None, 0.85),
    _result("ce-0", "cross-encoder", 0, 0.80),
    _result("ce-100", "cross-encoder", 100, 0.84),
    _result("ce-400", "cross-encoder", 400, 0.86),
]
PER_QUERY = {
    r.model: _per_query(r.ndcg10, 1 if r.family in ("baseline", "teacher") else 3) for r in RESULTS
}


def test_students_are_compared_with_the_human_only_one_and_the_teacher_at_every_size():
    comparisons = compare_students(RESULTS, PER_QUERY)
    pairs = {(c.student, c.reference): c.difference for c in comparisons}
    assert set(pairs) == {
        ("ce-100", "ce-0"),
        ("ce-100", "teacher"),
        ("ce-400", "ce-0"),
        ("ce-400", "teacher"),
    }
    assert pairs["ce-400", "ce-0"].a_better and pairs["ce-400", "ce-0"].low > 0.05
    assert pairs["ce-100", "teacher"].high < 0  # below the teacher


def test_answer_reads_the_trend_and_judges_the_largest_set_by_its_interval():
    lines = answer(RESULTS, compare_students(RESULTS, PER_QUERY))
    assert "rises at every step" in lines[0] and "0.8000 → 0.8400 → 0.8600" in lines[0]
    assert "+400 augmented queries beats the human-only student" in lines[1]
    assert "+400 augmented queries beats the teacher" in lines[2]


def test_report_writes_tables_plots_comparisons_and_config(tmp_path: Path):
    report = write_report(tmp_path, RESULTS, {"scale": "unit"}, per_query=PER_QUERY)
    text = report.read_text()
    assert "| ce-400 | 400 | 3 | 0.8600 (0.8500-0.8700) |" in text
    assert "| ce-400 | 400 | ce-0 | +0.0600 (" in text
    for png in ("ndcg_vs_augmented.png", "latency_vs_quality.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
    assert '"scale": "unit"' in (tmp_path / "config.json").read_text()
    assert len(json.loads((tmp_path / "comparisons.json").read_text())) == 4
