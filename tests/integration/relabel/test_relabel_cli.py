"""`relkd catalog upsert`, `relkd teacher promote` and `relkd relabel status` against a
real broker: what they publish is what candidate generation consumes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts.artifacts import TEACHER_JSON
from contracts.topics import RELABEL_REQUESTS
from ops.cli import app
from services.candidate_generation.requeue import BACKLOG_FILE, RelabelBacklog, StalePair
from services.core.broker import free_port
from services.core.settings import Settings

pytestmark = pytest.mark.integration


def _ours(read_topic, predicate) -> list:
    # Everything on the shared topic for a few seconds: other tests publish there too.
    return [m for m in read_topic(RELABEL_REQUESTS, expect=10**6, timeout_s=5) if predicate(m)]


def test_catalog_upsert_and_teacher_promote_publish_relabel_requests(
    settings: Settings, read_topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    products = tmp_path / "products.jsonl"
    products.write_text(
        "\n".join(
            json.dumps({"product_id": f"{tag}-{i}", "title": f"teak bench {i}", "brand": "Acme"})
            for i in range(5)
        )
    )
    runner = CliRunner()
    result = runner.invoke(app, ["catalog", "upsert", str(products), "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "published 5 products in 3 product_changed request(s)" in result.output
    changed = _ours(
        read_topic,
        lambda m: (
            m.HasField("product_changed")
            and m.product_changed.products[0].product_id.startswith(tag)
        ),
    )
    ids = sorted(p.product_id for m in changed for p in m.product_changed.products)
    assert ids == [f"{tag}-{i}" for i in range(5)]
    assert {m.meta.producer for m in changed} == {"relkd-cli"}

    checkpoint = tmp_path / "teacher"
    checkpoint.mkdir()
    (checkpoint / TEACHER_JSON).write_text(
        json.dumps(
            {
                "name": "teacher",
                "version": f"v-{tag}",
                "kind": "classifier",
                "backbone": "tiny",
                "template": "{title}",
                "max_length": 64,
                "temperature": 1.0,
            }
        )
    )
    # The check refuses when no teacher-labeling service serves the new version.
    monkeypatch.setenv("RELKD_TEACHER_LABELING_PORT", str(free_port()))
    refused = runner.invoke(app, ["teacher", "promote", str(checkpoint)])
    assert refused.exit_code == 1 and "UNAVAILABLE" in refused.output
    result = runner.invoke(app, ["teacher", "promote", str(checkpoint), "--no-check"])
    assert result.exit_code == 0, result.output
    promoted = _ours(
        read_topic,
        lambda m: m.HasField("teacher_changed") and m.teacher_changed.teacher.version == f"v-{tag}",
    )
    assert len(promoted) == 1 and promoted[0].teacher_changed.teacher.name == "teacher"


def test_relabel_status_shows_the_backlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELKD_CANDIDATE_REQUEUE_PAIRS_PER_HOUR", "10")
    backlog = RelabelBacklog(tmp_path / BACKLOG_FILE, pairs_per_hour=10)
    pairs = [StalePair("q", "sofa", f"p{i}", 1.0) for i in range(4)]
    backlog.enqueue("v2", pairs)
    backlog.mark("v2", pairs[:1], "requeued")
    backlog.close()
    result = CliRunner().invoke(app, ["relabel", "status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if " v2 " in line]
    # teacher version, queued, requeued, missing, pending
    assert row.replace("│", " ").split() == ["v2", "4", "1", "0", "3"]
    assert "10 pairs/hour, 9 left this hour" in result.output
    missing = CliRunner().invoke(app, ["relabel", "status", "--state-dir", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "no relabel backlog yet" in missing.output
