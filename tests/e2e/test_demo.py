"""`relkd demo --scale ci`: the whole distillation loop end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration


# The whole loop (teacher and six students on CPU) can outlast the suite's 600 s default
# on a busy machine; the demo subprocess itself is bounded at 1500 s.
@pytest.mark.timeout(1600)
def test_demo_runs_the_loop_and_writes_the_report(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    env = {**os.environ, "RELKD_DATA_DIR": str(tmp_path)}
    env.pop("RELKD_KAFKA_BOOTSTRAP", None)
    done = subprocess.run(
        [sys.executable, "-m", "ops", "demo", "--scale", "ci", "--out", str(run_dir)],
        env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = run_dir / "report" / "report.md"
    assert f"report: {report}" in done.stdout

    results = {r["model"]: r for r in json.loads((report.parent / "results.json").read_text())}
    families = [r["family"] for r in results.values()]
    assert families.count("baseline") == 2
    assert families.count("teacher") == 1
    assert families.count("cross-encoder") == 4  # human only and three augmented sizes
    assert families.count("two-tower") == 2
    assert families.count("served") == 1
    sizes = sorted(
        r["augmented_queries"] for r in results.values() if r["family"] == "cross-encoder"
    )
    assert sizes[0] == 0 and len(set(sizes)) == 4
    for r in results.values():
        assert 0.0 < r["ndcg10"] <= 1.0
        assert r["ndcg10_ci"][0] <= r["ndcg10"] <= r["ndcg10_ci"][1]
        assert 0.0 < r["latency_p50_ms"] <= r["latency_p99_ms"]

    # Every distilled student against its kind's human-only one and the teacher.
    comparisons = json.loads((report.parent / "comparisons.json").read_text())
    assert len(comparisons) == 2 * (3 + 1)
    assert "At equal human data" in done.stdout

    # The augmented set was labeled by the teacher through Kafka and stored.
    candidates = json.loads((run_dir / "candidates.json").read_text())
    assert candidates["teacher_labels"] == candidates["batch"]["pairs_published"] > 0

    text = report.read_text()
    assert "| model | augmented queries | seeds | NDCG@10 (95% CI) |" in text
    assert "## At equal human data" in text
    assert "teacher" in text and "served via Triton" in text
    for plot in ("ndcg_vs_augmented.png", "latency_vs_quality.png"):
        assert (report.parent / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    serve = json.loads((run_dir / "serve.json").read_text())
    # Each served answer names the training run (the best student) and the Triton model.
    served_as = f"{serve['student']}:1 (served by triton student:"
    assert serve["examples"] and all(e["model"].startswith(served_as) for e in serve["examples"])

    # Nothing the demo started outlives it (broker, services, Triton all inherit its env).
    assert not [
        p.info for p in psutil.process_iter(["pid", "cmdline"]) if _started_by_demo(p, tmp_path)
    ]


def _started_by_demo(process: psutil.Process, data_dir: Path) -> bool:
    try:
        return (
            process.environ().get("RELKD_DATA_DIR") == str(data_dir)
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return False
