"""Where a message stream stands: a plain reader of one topic and a consumer group's
committed offsets, so a driver can wait until a service has handled everything that
reached it (and count what each hop let through) instead of sleeping."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, Message
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from contracts.topics import Topic


class TopicTail:
    """Every message of one topic from its start, decoded, read by a consumer assigned
    every partition (no group: it commits nothing and moves no service's offsets)."""

    def __init__(self, bootstrap: str, topic: Topic, timeout_s: float = 30.0) -> None:
        self.topic = topic
        self.messages: list[Message] = []
        # Next offset per partition: how far this reader has read.
        self.read_to: dict[int, int] = {}
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        deadline = time.monotonic() + timeout_s
        while not (partitions := self._consumer.partitions_for_topic(topic.name)):
            if time.monotonic() > deadline:
                self._consumer.close()
                raise TimeoutError(f"{topic.name}: no partitions after {timeout_s:.0f}s")
            time.sleep(0.2)
        assigned = [TopicPartition(topic.name, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_beginning(*assigned)

    def poll(self, timeout_ms: int = 200) -> int:
        """Reads what arrived; returns how many messages."""
        got = 0
        for tp, records in self._consumer.poll(timeout_ms=timeout_ms).items():
            for record in records:
                with contextlib.suppress(DecodeError):
                    self.messages.append(self.topic.decode(record.value))
                got += 1
                self.read_to[tp.partition] = record.offset + 1
        return got

    def catch_up(self, timeout_s: float, quiet_polls: int = 3) -> None:
        """Reads until the broker's end offsets are reached and `quiet_polls` polls in a
        row bring nothing (some brokers report end offsets below what they serve)."""
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while quiet < quiet_polls:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic.name}: still reading after {timeout_s:.0f}s")
            got = self.poll()
            ends = self._ends()
            behind = any(self.read_to.get(p, 0) < end for p, end in ends.items())
            quiet = 0 if got or behind else quiet + 1

    def _ends(self) -> dict[int, int]:
        partitions = self._consumer.assignment()
        if not partitions:
            return {}
        return {tp.partition: end for tp, end in self._consumer.end_offsets(partitions).items()}

    def close(self) -> None:
        self._consumer.close()


def committed_offsets(
    admin: KafkaAdminClient, group: str, topic: str, partitions: list[int]
) -> dict[int, int]:
    """Next offset to process per partition of `topic`, as `group` committed it."""
    wanted = [TopicPartition(topic, p) for p in partitions]
    offsets = admin.list_group_offsets({group: wanted}).get(group, {})
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topic and meta is not None and meta.offset >= 0
    }


def wait_consumed(
    admin: KafkaAdminClient,
    group: str,
    tail: TopicTail,
    timeout_s: float,
    on_wait: Callable[[str], Any] | None = None,
) -> None:
    """Blocks until `group` committed past every message `tail` has read: the service
    handled them and (services flush before they commit) published what they caused."""
    deadline = time.monotonic() + timeout_s
    last_report = time.monotonic()
    while True:
        committed = committed_offsets(admin, group, tail.topic.name, sorted(tail.read_to))
        behind = {p: end - committed.get(p, 0) for p, end in tail.read_to.items()}
        left = sum(n for n in behind.values() if n > 0)
        if left == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"consumer group {group!r} has {left} message(s) of {tail.topic.name} "
                f"unhandled after {timeout_s:.0f}s"
            )
        if on_wait is not None and time.monotonic() - last_report > 15:
            on_wait(f"{group}: {left} message(s) of {tail.topic.name} to go")
            last_report = time.monotonic()
        time.sleep(0.5)
