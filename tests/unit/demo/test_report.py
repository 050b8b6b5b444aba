from __future__ import annotations

from pathlib import Path

from ops.demo.report import ModelResult, answer, write_report


def _result(model: str, family: str, augmented: int | None, ndcg: float) -> ModelResult:
    return ModelResult(model, family, augmented, ndcg, ndcg, ndcg, None, 10.0, 12.0)


RESULTS = [
    _result("BM25", "baseline", None, 0.89),
    _result("teacher", "teacher", None, 0.92),
    _result("ce-0", "cross-encoder", 0, 0.90),
    _result("ce-100", "cross-encoder", 100, 0.91),
    _result("ce-400", "cross-encoder", 400, 0.93),
]


def test_answer_reads_the_trend_and_the_gap_to_the_teacher():
    lines = answer(RESULTS)
    assert "rises at every step" in lines[0] and "0.9000 → 0.9100 → 0.9300" in lines[0]
    assert "passes the teacher" in lines[1] and "+0.0100" in lines[1]


def test_report_writes_table_plots_and_config(tmp_path: Path):
    report = write_report(tmp_path, RESULTS, {"scale": "unit"})
    text = report.read_text()
    assert "| ce-400 | 400 | 0.9300 |" in text
    for png in ("ndcg_vs_augmented.png", "latency_vs_quality.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
    assert '"scale": "unit"' in (tmp_path / "config.json").read_text()
