"""Throughput of the Kafka bus against raw kafka-python with the same settings.

    python bench/bench_bus.py [--messages 20000] [--broker tansu|noida] [--out FILE]

Produces ~300-byte CandidateBatch payloads and consumes them as a consumer group
with manual commits after every batch, once through ``services.core.bus`` and once
through plain ``KafkaProducer``/``KafkaConsumer`` doing the same work (protobuf
encode/decode, idempotent acks=all producer, commit per polled batch). Each side
gets a fresh topic so neither reads the other's messages.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import Topic
from services.core import bus
from services.core.broker import EmbeddedBroker, create_topics
from services.core.settings import Settings


def payload(i: int) -> topics_pb2.CandidateBatch:
    return topics_pb2.CandidateBatch(
        query_id=f"q{i:08d}",
        query="mid century modern grey velvet sofa with wooden legs",
        products=[
            common_pb2.Product(
                product_id=f"p{i:08d}-{j}",
                title=f"Ashford 84 in. Velvet Square Arm Sofa, Grey, Model {j}",
                brand="Ashford",
            )
            for j in range(3)
        ],
        source="bench",
    )


def producer_config(settings: Settings, bootstrap: str) -> dict:
    return {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.kafka_linger_ms,
        "retries": 10,
    }


def consumer_config(settings: Settings, bootstrap: str, group: str) -> dict:
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "max_poll_records": settings.kafka_max_poll_records,
    }


def bench_raw(
    settings: Settings, bootstrap: str, topic: Topic, messages: list
) -> tuple[float, float]:
    producer = KafkaProducer(**producer_config(settings, bootstrap))
    start = time.perf_counter()
    for m in messages:
        producer.send(topic.name, key=m.query_id.encode(), value=m.SerializeToString())
    producer.flush()
    produce_s = time.perf_counter() - start
    producer.close()

    consumer = KafkaConsumer(
        topic.name, **consumer_config(settings, bootstrap, f"raw-{uuid.uuid4().hex}")
    )
    seen, start = 0, None
    while seen < len(messages):
        polled = consumer.poll(timeout_ms=500)
        if not polled:
            continue
        start = start or time.perf_counter()
        for records in polled.values():
            for record in records:
                topic.decode(record.value)
            seen += len(records)
        consumer.commit()
    consume_s = time.perf_counter() - start
    consumer.close()
    return produce_s, consume_s


def bench_bus(
    settings: Settings, bootstrap: str, topic: Topic, messages: list
) -> tuple[float, float]:
    publisher = bus.Publisher(settings, bootstrap)
    start = time.perf_counter()
    for m in messages:
        publisher.publish(topic, m.query_id, m)
    publisher.flush()
    produce_s = time.perf_counter() - start

    first: list[float] = []

    def count(deliveries):
        if not first:
            first.append(time.perf_counter())
        return []

    loop = bus.ConsumerLoop(
        settings,
        topic,
        f"bus-{uuid.uuid4().hex}",
        count,
        publisher,
        bootstrap=bootstrap,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    while loop.processed < len(messages):
        polled = loop._consumer.poll(timeout_ms=500)
        if any(polled.values()):
            loop.process_batch(polled)
    consume_s = time.perf_counter() - first[0]
    loop._consumer.close()
    publisher.close()
    return produce_s, consume_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--broker", default="tansu", choices=["tansu", "noida"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench/results/bus.json"))
    args = parser.parse_args()
    settings = Settings()
    messages = [payload(i) for i in range(args.messages)]
    size = sum(m.ByteSize() for m in messages) / len(messages)
    results: dict[str, list[dict[str, float]]] = {"raw": [], "bus": []}
    with EmbeddedBroker(args.broker) as broker:
        sides = [("raw", bench_raw), ("bus", bench_bus)]
        for round_ in range(args.rounds):
            # Alternate the order so neither side always runs on a warmer broker.
            for name, fn in sides if round_ % 2 == 0 else sides[::-1]:
                topic = Topic(f"bench.{name}.{uuid.uuid4().hex[:8]}", topics_pb2.CandidateBatch)
                create_topics(broker.bootstrap, [topic], partitions=4, replication=1)
                produce_s, consume_s = fn(settings, broker.bootstrap, topic, messages)
                results[name].append(
                    {
                        "produce_msgs_per_s": args.messages / produce_s,
                        "consume_msgs_per_s": args.messages / consume_s,
                    }
                )

    def best(name: str, key: str) -> float:
        return max(r[key] for r in results[name])

    summary = {
        "broker": args.broker,
        "messages": args.messages,
        "payload_bytes": round(size, 1),
        "rounds": args.rounds,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "raw": {k: round(best("raw", k)) for k in ("produce_msgs_per_s", "consume_msgs_per_s")},
        "bus": {k: round(best("bus", k)) for k in ("produce_msgs_per_s", "consume_msgs_per_s")},
    }
    summary["bus_overhead_pct"] = {
        k: round(100 * (1 - summary["bus"][k] / summary["raw"][k]), 1) for k in summary["raw"]
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing[args.broker] = summary
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
