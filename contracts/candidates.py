"""Candidate batches as a file: one ``CandidateBatch`` a line, in protobuf's JSON form.

``relkd candidates generate --out FILE`` writes it (the same messages it would publish to
``relevance.candidates.v1``) and ``relkd teacher label`` reads it, so a cluster can run
candidate generation and bulk labeling as two Jobs over a shared volume, without Kafka.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from google.protobuf import json_format
from google.protobuf.message import Message
from relevance.v1 import topics_pb2

from contracts.topics import CANDIDATES, Topic


class CandidateFile:
    """Appends CandidateBatch lines to a JSONL file; the publish/flush side of a Publisher."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_last_line(self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def publish(self, topic: Topic, key: str, message: Message) -> None:
        if topic is not CANDIDATES or not isinstance(message, topics_pb2.CandidateBatch):
            raise ValueError(f"{self.path}: holds {CANDIDATES.name} batches only, not {topic.name}")
        record = json_format.MessageToDict(message, preserving_proto_field_name=True)
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        """Make every written line durable: the caller records them as done after this."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CandidateFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def read_candidate_batches(path: Path) -> Iterator[topics_pb2.CandidateBatch]:
    """The batches of a candidates file, in file order; a bad line names its line number."""
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield json_format.ParseDict(json.loads(line), topics_pb2.CandidateBatch())
            except (json.JSONDecodeError, json_format.ParseError) as error:
                raise ValueError(
                    f"{path}:{number}: not a CandidateBatch record: {error}"
                ) from error


def _drop_partial_last_line(path: Path) -> None:
    # A crash mid-write leaves half a line; its batch was never flushed, so never recorded
    # as done, and the resumed run writes it again.
    if not path.exists():
        return
    with path.open("rb+") as file:
        end = file.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(0, position - 65536)
            file.seek(start)
            block = file.read(position - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                position = start + newline + 1
                break
            position = start
        if position < end:
            file.truncate(position)
