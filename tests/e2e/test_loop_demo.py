"""`relkd loop demo --scale ci`: rounds of drift through the embedded stack, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from ops.loop.report import check_rounds_json
from services.core.broker import free_port
from services.serve import SERVICES

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_loop_demo_runs_rounds_of_drift_and_writes_the_report(
    tmp_path: Path, llama_teacher: Path
) -> None:
    """With the suite's tiny teacher (`--teacher`): fine-tuning the demo's own would
    double the run; teacher training has tests of its own."""
    out = tmp_path / "loop"
    env = {
        **os.environ,
        "RELKD_DATA_DIR": str(tmp_path),
        # Ports of its own: other stacks may run on this machine.
        **{f"RELKD_{spec.port_setting.upper()}": str(free_port()) for spec in SERVICES.values()},
    }
    env.pop("RELKD_KAFKA_BOOTSTRAP", None)
    done = subprocess.run(
        [sys.executable, "-m", "ops", "loop", "demo", "--scale", "ci", "--out", str(out),
         "--json", str(tmp_path / "out.json"), "--teacher", str(llama_teacher)],
        env=env, capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"report: {out / 'report' / 'report.md'}" in done.stdout

    document = json.loads((tmp_path / "out.json").read_text())
    assert check_rounds_json(document) == []
    rounds = document["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]  # before drift, then three drift rounds
    assert any(r["decision"] == "promoted" for r in rounds)
    assert all(r["decision"] in ("promoted", "refused") and r["reason"] for r in rounds)
    assert all(r["labels_added"] > 0 for r in rounds)
    assert len({r["snapshot"] for r in rounds}) == len(rounds)
    # The frozen student is the first one: it is what serves after round 0.
    assert rounds[0]["frozen"]["ndcg@10"] == pytest.approx(rounds[0]["serving"]["ndcg@10"])

    details = json.loads((out / "report" / "details.json").read_text())
    for number, hops in enumerate(details["hops"][1:], start=1):
        # The drift rounds went through the served path: every request sampled, judged.
        assert hops["score_requests"] == hops["served_samples"] == hops["traffic_queries"] > 0
        # A query seen in an earlier round is known already: only new ones are asked for.
        assert hops["new_query_requests"] >= hops["unknown_queries"]
        assert hops["products_changed"] > 0 and hops["candidate_pairs"] == hops["labels_added"]
        # Score was answered by the version serving after the previous round's decision.
        assert hops["serving_version"] == details["rounds"][number - 1]["serving_version"]
    assert sum(hops["unknown_queries"] for hops in details["hops"][1:]) > 0  # new query styles
    report = (out / "report" / "report.md").read_text()
    assert "| round | labels added | snapshot | decision |" in report
    assert (out / "report" / "ndcg_by_round.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Nothing the demo started outlives it (broker, services, Triton inherit its env).
    assert not [p.info for p in psutil.process_iter(["pid", "cmdline"]) if _started_by(p, tmp_path)]


def _started_by(process: psutil.Process, data_dir: Path) -> bool:
    try:
        return (
            process.environ().get("RELKD_DATA_DIR") == str(data_dir)
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return False
