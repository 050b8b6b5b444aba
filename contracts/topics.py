"""The Kafka topics of the platform and the one protobuf message type each carries."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message
from relevance.v1 import topics_pb2


@dataclass(frozen=True)
class Topic:
    name: str
    message_type: type[Message]
    # Broker-side topic configs applied when the platform creates the topic.
    configs: dict[str, str] = field(default_factory=dict)

    def decode(self, payload: bytes) -> Message:
        message = self.message_type()
        message.ParseFromString(payload)
        return message


CANDIDATES = Topic("relevance.candidates.v1", topics_pb2.CandidateBatch)
# Compacted: a label is keyed by its (query, product) pair, so only the newest
# label per pair needs to be kept forever.
LABELS = Topic("relevance.labels.v1", topics_pb2.LabelRecord, {"cleanup.policy": "compact"})
RELABEL_REQUESTS = Topic("relevance.relabel-requests.v1", topics_pb2.RelabelRequest)
# A sample of the requests student-inference served (RELKD_SERVED_SAMPLE_RATE), keyed by
# query_id; the disagreement monitor and the relabel backlog's priorities read it.
SERVED = Topic(
    "relevance.served.v1", topics_pb2.ServedSample, {"retention.ms": str(7 * 24 * 3600 * 1000)}
)
DLQ = Topic("relevance.dlq.v1", topics_pb2.DeadLetter, {"retention.ms": str(14 * 24 * 3600 * 1000)})

ALL_TOPICS: tuple[Topic, ...] = (CANDIDATES, LABELS, RELABEL_REQUESTS, SERVED, DLQ)

PAIR_KEY_SEPARATOR = "\x1f"


def pair_key(query_id: str, product_id: str) -> str:
    """Key of a (query, product) pair on the labels topic; compaction keeps one label per key."""
    return f"{query_id}{PAIR_KEY_SEPARATOR}{product_id}"
