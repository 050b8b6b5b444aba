"""`relkd dlq list|show|replay`: inspect dead letters and re-drive them to their origin.

A dead letter (``relevance.dlq.v1``) is named by its place on the DLQ topic,
``PARTITION:OFFSET``. Replaying publishes the letter's payload, with its original key,
back to its source topic, where the consumer group processes it again (and dead-letters
it again if it is still wrong). A letter that carries no payload (the message was too
large) is replayed from its source topic/partition/offset while the broker retains it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated

import typer
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from kafka import KafkaConsumer, TopicPartition
from relevance.v1 import topics_pb2

from contracts.topics import ALL_TOPICS, DLQ
from services.core.bus import Publisher
from services.core.settings import Settings, get_settings


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter and where it sits on the DLQ topic."""

    partition: int
    offset: int
    letter: topics_pb2.DeadLetter

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"


def _bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise typer.BadParameter(
            "set RELKD_KAFKA_BOOTSTRAP to the cluster (`relkd up` prints it)",
            param_hint="RELKD_KAFKA_BOOTSTRAP",
        )
    return settings.kafka_bootstrap


def _read(
    settings: Settings, topic: str, partitions: Sequence[int] | None, idle_ms: int
) -> Iterator[tuple[int, int, bytes | None, bytes | None]]:
    """(partition, offset, key, value) of a topic from its start to its end.

    The end is where every partition has reached the end offset the broker reported
    *and* a poll then comes back empty after `idle_ms`: the end offsets alone are not
    enough (Tansu under-reports them), and a quiet poll alone is not either (on a loaded
    machine the first fetch can take longer than `idle_ms`, which once listed one of
    two letters). Gives up with TimeoutError, naming the lagging partitions, after
    `settings.kafka_request_timeout_ms` x 3 without reaching the reported ends.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=_bootstrap(settings),
        client_id=f"{settings.kafka_client_id}-dlq-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        **settings.kafka_security(),
        request_timeout_ms=max(settings.kafka_request_timeout_ms, 11000),
        fetch_max_bytes=max(settings.kafka_max_message_bytes * 2, 52428800),
        max_partition_fetch_bytes=max(settings.kafka_max_message_bytes, 1048576) * 2,
    )
    try:
        known = consumer.partitions_for_topic(topic) or set()
        wanted = sorted(known if partitions is None else set(partitions) & known)
        assigned = [TopicPartition(topic, p) for p in wanted]
        if not assigned:
            return
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        patience_s = 3 * max(settings.kafka_request_timeout_ms, 11000) / 1000
        deadline = time.monotonic() + patience_s
        while True:
            polled = consumer.poll(timeout_ms=idle_ms)
            if not any(polled.values()):
                behind = {
                    f"{tp.partition}: at {consumer.position(tp)} of {ends[tp]}"
                    for tp in assigned
                    if consumer.position(tp) < ends[tp]
                }
                if not behind:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{topic}: partitions still short of their end offsets after "
                        f"{patience_s:.0f} s: {sorted(behind)}"
                    )
                continue
            deadline = time.monotonic() + patience_s
            for records in polled.values():
                for record in records:
                    yield record.partition, record.offset, record.key, record.value
    finally:
        consumer.close(autocommit=False, timeout_ms=settings.kafka_request_timeout_ms)


def read_letters(settings: Settings, idle_ms: int = 1000) -> list[StoredLetter]:
    """Every dead letter on the DLQ topic, in (partition, offset) order."""
    letters = []
    for partition, offset, _key, value in _read(settings, DLQ.name, None, idle_ms):
        try:
            letter = topics_pb2.DeadLetter.FromString(value or b"")
        except DecodeError:
            letter = topics_pb2.DeadLetter(reason="(not a DeadLetter)", error_type="DecodeError")
        letters.append(StoredLetter(partition, offset, letter))
    return sorted(letters, key=lambda s: (s.partition, s.offset))


def _original(settings: Settings, letter: topics_pb2.DeadLetter) -> tuple[bytes | None, bytes]:
    """The key and value of a dead letter's source message, read from its source topic."""
    for partition, offset, key, value in _read(
        settings, letter.source_topic, [letter.source_partition], idle_ms=1000
    ):
        if partition == letter.source_partition and offset == letter.source_offset:
            return key, value or b""
    raise LookupError(
        f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset} "
        "is no longer on the broker"
    )


def replay(settings: Settings, letters: Sequence[StoredLetter]) -> int:
    """Publishes each letter's message back to its source topic; returns how many."""
    publisher = Publisher(settings)
    try:
        for stored in letters:
            letter = stored.letter
            if letter.payload or not letter.payload_size:
                key, value = letter.source_key or None, letter.payload
            else:
                key, value = _original(settings, letter)
            publisher.publish_raw(letter.source_topic, key, value)
        publisher.flush()
    finally:
        publisher.close()
    return len(letters)


def _select(
    letters: Sequence[StoredLetter],
    ids: Sequence[str],
    source_topic: str | None,
    group: str | None,
    error_type: str | None,
) -> list[StoredLetter]:
    unknown = set(ids) - {s.id for s in letters}
    if unknown:
        raise typer.BadParameter(f"no dead letter {', '.join(sorted(unknown))}", param_hint="ID")
    return [
        s
        for s in letters
        if (not ids or s.id in ids)
        and (source_topic is None or s.letter.source_topic == source_topic)
        and (group is None or s.letter.consumer_group == group)
        and (error_type is None or s.letter.error_type == error_type)
    ]


app = typer.Typer(help="Inspect dead letters (relevance.dlq.v1) and re-drive them.")

SourceTopic = Annotated[str | None, typer.Option(help="Only letters from this source topic.")]
Group = Annotated[str | None, typer.Option(help="Only letters of this consumer group.")]
ErrorType = Annotated[
    str | None, typer.Option(help="Only letters of this error type (e.g. DecodeError).")
]


@app.command("list")
def list_command(
    source_topic: SourceTopic = None, group: Group = None, error_type: ErrorType = None
) -> None:
    """One line per dead letter: id, source, error type, size, group, reason."""
    selected = _select(read_letters(get_settings()), (), source_topic, group, error_type)
    typer.echo(f"{'ID':<10}{'SOURCE':<40}{'ERROR':<18}{'BYTES':>9}  {'GROUP':<22}REASON")
    for s in selected:
        m = s.letter
        source = f"{m.source_topic}/{m.source_partition}/{m.source_offset}"
        typer.echo(
            f"{s.id:<10}{source:<40}{m.error_type:<18}{m.payload_size:>9}  "
            f"{m.consumer_group:<22}{m.reason[:100]}"
        )
    typer.echo(f"{len(selected)} dead letter(s)")


@app.command("show")
def show_command(letter_id: Annotated[str, typer.Argument(help="PARTITION:OFFSET")]) -> None:
    """A dead letter in full, its payload decoded as its source topic's message if it can be."""
    [stored] = _select(read_letters(get_settings()), [letter_id], None, None, None)
    m = stored.letter
    typer.echo(f"id: {stored.id}")
    for field in ("source_topic", "source_partition", "source_offset", "consumer_group"):
        typer.echo(f"{field}: {getattr(m, field)}")
    typer.echo(f"source_key: {m.source_key.decode(errors='replace')}")
    typer.echo(f"error_type: {m.error_type}")
    typer.echo(f"reason: {m.reason}")
    typer.echo(f"payload_size: {m.payload_size}")
    topic = next((t for t in ALL_TOPICS if t.name == m.source_topic), None)
    if not m.payload:
        typer.echo("payload: (not carried; `replay` reads it from the source topic)")
    elif topic is None:
        typer.echo(f"payload: {len(m.payload)} bytes")
    else:
        try:
            typer.echo(f"payload ({topic.message_type.DESCRIPTOR.full_name}):")
            typer.echo(text_format.MessageToString(topic.decode(m.payload)))
        except DecodeError:
            typer.echo(f"payload: {m.payload[:200]!r} (not a decodable message)")


@app.command("replay")
def replay_command(
    letter_ids: Annotated[
        list[str] | None, typer.Argument(help="PARTITION:OFFSET of each letter; none: all.")
    ] = None,
    source_topic: SourceTopic = None,
    group: Group = None,
    error_type: ErrorType = None,
    dry_run: Annotated[bool, typer.Option(help="List what would be replayed.")] = False,
) -> None:
    """Re-drive dead letters to their source topic (its consumers process them again)."""
    settings = get_settings()
    selected = _select(read_letters(settings), letter_ids or [], source_topic, group, error_type)
    if dry_run:
        for s in selected:
            typer.echo(f"{s.id} -> {s.letter.source_topic}")
        typer.echo(f"{len(selected)} dead letter(s) would be replayed")
        return
    count = replay(settings, selected)
    typer.echo(f"replayed {count} dead letter(s)")
