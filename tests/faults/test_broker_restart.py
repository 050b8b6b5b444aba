"""noida-db SIGKILLed and restarted under a running consumer: every input is processed.

noida persists its Kafka state as one snapshot file (``kafka.json`` in its data
directory), rewritten shortly after each change. Two things follow from a SIGKILL, and
this test drives the platform through both:

* restarted on its snapshot, noida has forgotten every group (the consumer must rejoin)
  and whatever was acknowledged after the last rewrite;
* a kill during the rewrite leaves no snapshot at all (1 of 8 kills mid-stream here),
  and noida starts empty: producers re-create the topic and its offsets start at 0
  again. A consumer that kept its fetch position through the rejoin (kafka-python
  does) then waits past every new record below that position: it never fetched again.
  The loop now restarts kept partitions from the group's committed offsets
  (``ConsumerLoop._start_kept_partitions_from_commits``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from fault_tools import (
    EchoLabeler,
    GatedEchoLabeler,
    committed,
    fault_settings,
    publish_candidates,
    read_all,
    run_id,
    run_loop,
    wait_for,
)
from kafka.errors import KafkaError

from contracts.topics import CANDIDATES, LABELS
from services.core import bus
from services.core.broker import EmbeddedBroker, create_topics, free_port
from services.core.settings import Settings


def _persisted_commit(data_dir: Path, group: str) -> int:
    """The offset noida's snapshot holds for `group` (what survives a SIGKILL)."""
    try:
        state = json.loads((data_dir / "kafka.json").read_text())
    except (OSError, ValueError):  # not written yet, or being rewritten
        return 0
    return sum(offset for (g, _, _), offset in state["committed_offsets"] if g == group)


def _killed(broker: EmbeddedBroker) -> None:
    os.kill(broker.pid, signal.SIGKILL)
    broker.stop()  # reaps the dead process; the data directory is the caller's


def _publish_until_delivered(settings: Settings, ids: list[str], attempts: list[int]) -> None:
    """An upstream that retries until the broker acknowledges (at-least-once)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        attempts.append(1)
        try:
            publish_candidates(settings, ids)
            return
        except (bus.DeliveryFailed, KafkaError):
            time.sleep(0.2)


def test_noida_killed_and_restarted_every_input_is_processed(tmp_path: Path) -> None:
    run, port = run_id(), free_port()
    before, during, after = ([f"{run}-{tag}{i:02d}" for i in range(10)] for tag in "abc")
    broker = EmbeddedBroker("noida", port=port, data_dir=tmp_path).start()
    create_topics(broker.bootstrap)
    settings = fault_settings(broker.bootstrap)
    publisher = bus.Publisher(settings)
    group = f"noida-restart-{run}"
    loop = bus.ConsumerLoop(settings, CANDIDATES, group, EchoLabeler(publisher), publisher)
    thread = run_loop(loop)
    try:
        publish_candidates(settings, before)
        # Killed once noida has written the commit down: what it acknowledged later it
        # would lose itself (it does not write each record down before acknowledging).
        wait_for(lambda: _persisted_commit(tmp_path, group) >= 10, 30, "noida to persist")

        # 1. Killed and restarted on its data, with inputs published while it is down.
        _killed(broker)
        attempts: list[int] = []
        upstream = threading.Thread(
            target=_publish_until_delivered, args=(settings, during, attempts)
        )
        upstream.start()
        time.sleep(1.0)
        broker = EmbeddedBroker("noida", port=port, data_dir=tmp_path).start()
        upstream.join(35)
        assert len(attempts) > 1  # the upstream did try while the broker was down
        publish_candidates(settings, after)
        wait_for(lambda: committed(broker.bootstrap, group) >= 30, 30, "30 inputs committed")
        labels = [m.query_id for m in read_all(broker.bootstrap, LABELS)]
        assert set(labels) == {*before, *during, *after}  # 30 in, 30 out (duplicates allowed)

        # 2. Killed and restarted without its snapshot (what a kill mid-rewrite leaves):
        # topics, records and commits are gone; producers re-create the topic from
        # offset 0 while the consumer remembers position 30.
        _killed(broker)
        (tmp_path / "kafka.json").unlink()
        broker = EmbeddedBroker("noida", port=port, data_dir=tmp_path).start()
        rewinds = loop.rewinds
        fresh = [f"{run}-d{i:02d}" for i in range(30)]  # as many as the stale position
        publish_candidates(settings, fresh)
        wait_for(lambda: committed(broker.bootstrap, group) >= 30, 30, "the new inputs")
        labels = [m.query_id for m in read_all(broker.bootstrap, LABELS)]
        assert set(labels) == set(fresh)  # 30 in, 30 out; the old ones went with noida
        assert loop.rewinds > rewinds
    finally:
        loop.stop()
        thread.join(30)
        publisher.close()
        broker.stop()
    assert not thread.is_alive()


def test_noida_restarted_empty_while_a_batch_retries_skips_no_new_input(tmp_path: Path) -> None:
    """The batch in flight cannot be delivered while noida is down, so it is retried; the
    restarted, empty noida numbers new inputs from 0 again. The retry must not commit the
    old batch's offsets over them (the group rebalances meanwhile: the loop goes back to
    the group's commits instead)."""
    run, port = run_id(), free_port()
    broker = EmbeddedBroker("noida", port=port, data_dir=tmp_path).start()
    create_topics(broker.bootstrap)
    # Waits between retries long enough for the consumer to rejoin the restarted broker
    # within one: the retry then runs as a member of the new group generation.
    settings = fault_settings(
        broker.bootstrap, bus_retry_backoff_s=2.5, bus_retry_backoff_max_s=2.5
    )
    publisher = bus.Publisher(settings)
    gated = GatedEchoLabeler(publisher)

    group = f"noida-retry-{run}"
    loop = bus.ConsumerLoop(settings, CANDIDATES, group, gated, publisher)
    thread = run_loop(loop)
    try:
        publish_candidates(settings, [f"{run}-old{i:02d}" for i in range(20)])
        assert gated.in_batch.wait(30)
        _killed(broker)
        (tmp_path / "kafka.json").unlink(missing_ok=True)
        gated.go_on.set()  # its labels cannot be delivered: the batch is retried
        wait_for(lambda: loop.retries >= 1, 30, "a failed delivery")
        broker = EmbeddedBroker("noida", port=port, data_dir=tmp_path).start()
        fresh = [f"{run}-new{i:02d}" for i in range(30)]  # more than the old position
        publish_candidates(settings, fresh)
        wait_for(lambda: committed(broker.bootstrap, group) >= 30, 40, "the new inputs")
        labels = {m.query_id for m in read_all(broker.bootstrap, LABELS)}
        missing = set(fresh) - labels
        assert not missing, f"{len(missing)} of 30 new inputs skipped"  # 30 in, 30 out
    finally:
        gated.go_on.set()
        loop.stop()
        thread.join(30)
        publisher.close()
        broker.stop()
    assert not thread.is_alive()
