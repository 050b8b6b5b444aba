"""`relkd dlq list|show|replay` against a real broker: letters listed, shown, and
re-driven to their source topic (a payload-less one read back from its origin)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from typer.testing import CliRunner

from contracts.topics import RELABEL_REQUESTS
from ops.cli import app
from services.core import bus, dead_letters
from services.core.settings import Settings

pytestmark = pytest.mark.integration


def _raw(settings: Settings, key: bytes) -> list[bytes]:
    return [
        value or b""
        for _p, _o, k, value in dead_letters._read(settings, RELABEL_REQUESTS.name, None, 1000)
        if k == key
    ]


def test_dead_letters_are_listed_shown_and_replayed(settings: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    group = f"dlq-cli-{run}"
    small = settings.model_copy(update={"kafka_max_message_bytes": 32 * 1024})
    publisher = bus.Publisher(settings)
    publisher.publish_raw(RELABEL_REQUESTS.name, f"{run}-bad".encode(), b"\xff garbage")
    publisher.publish_raw(RELABEL_REQUESTS.name, f"{run}-big".encode(), b"\x0a" + b"x" * 50_000)
    publisher.flush()
    publisher.close()
    out = bus.Publisher(small)
    loop = bus.ConsumerLoop(small, RELABEL_REQUESTS, group, lambda ds: [], out)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while loop.dead_lettered < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    loop.stop()
    thread.join(15)
    out.close()

    ours = {
        stored.letter.error_type: stored.id
        for stored in dead_letters.read_letters(settings)
        if stored.letter.consumer_group == group
        and stored.letter.source_key.startswith(run.encode())
    }
    assert set(ours) == {"DecodeError", "MessageTooLarge"}
    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--group", group])
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line for line in listed.output.splitlines()[1:-1]}
    assert "DecodeError" in rows[ours["DecodeError"]]
    assert "MessageTooLarge" in rows[ours["MessageTooLarge"]]
    ids = ours
    shown = runner.invoke(app, ["dlq", "show", ids["DecodeError"]])
    assert shown.exit_code == 0, shown.output
    assert f"consumer_group: {group}" in shown.output and "is not a" in shown.output

    replayed = runner.invoke(app, ["dlq", "replay", ids["DecodeError"], ids["MessageTooLarge"]])
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 2 dead letter(s)" in replayed.output
    assert _raw(settings, f"{run}-bad".encode()) == [b"\xff garbage"] * 2
    big = _raw(settings, f"{run}-big".encode())
    assert len(big) == 2 and big[0] == big[1] and len(big[0]) > 50_000
