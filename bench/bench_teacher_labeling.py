"""Teacher labeling throughput: through Kafka, batched in-process, and naive.

All three sides label the same judged pairs with the same checkpoint and input text:

* **kafka**: the teacher-labeling service (its own process) consumes candidate batches
  from ``relevance.candidates.v1`` on an embedded broker and publishes labels; timed
  from the first publish until every label is read back from ``relevance.labels.v1``;
* **batched**: ``TeacherLabeler.label`` in-process (token-budget micro-batches);
* **naive**: Hugging Face's ``pipeline("text-classification")`` once per pair, the way a
  first prototype of a labeling service would.

Results go to ``bench/results/teacher_labeling.json``.

    python bench/bench_teacher_labeling.py --checkpoint .relkd/models/teacher \
        --dataset .relkd/data/sim --pairs 512
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import torch
import typer
from relevance.v1 import topics_pb2
from transformers import pipeline

from contracts.products import product_message
from contracts.topics import CANDIDATES, LABELS
from ops.stack import health_status
from services.core import bus, process
from services.core.broker import EmbeddedBroker, create_topics, free_port
from services.core.settings import Settings
from training.teacher.data import load_split
from training.teacher.labeler import TeacherLabeler
from training.teacher.templates import render

RESULTS = Path(__file__).parent / "results" / "teacher_labeling.json"


def kafka_pairs_per_s(checkpoint: Path, batch: list[tuple[str, dict]]) -> float:
    """Pairs/s through the real service: candidates topic -> teacher -> labels topic."""
    from kafka import KafkaConsumer

    by_query: dict[str, list[dict]] = defaultdict(list)
    for query, product in batch:
        by_query[query].append(product)
    with EmbeddedBroker("tansu") as broker, tempfile.TemporaryDirectory() as logs:
        create_topics(broker.bootstrap)
        settings = Settings(kafka_bootstrap=broker.bootstrap)
        port = free_port()
        env = {
            **os.environ,
            "RELKD_KAFKA_BOOTSTRAP": broker.bootstrap,
            "RELKD_TEACHER_CHECKPOINT": str(checkpoint),
            "RELKD_TEACHER_LABELING_PORT": str(port),
        }
        # Its own session, and it dies with this process, even a SIGKILLed one.
        log_path = Path(logs) / "teacher-labeling.log"
        service = process.spawn(
            [sys.executable, "-m", "services.serve", "teacher-labeling"], log_path, env
        )
        consumer = KafkaConsumer(
            LABELS.name,
            bootstrap_servers=broker.bootstrap,
            group_id=uuid.uuid4().hex,
            auto_offset_reset="earliest",
        )
        publisher = bus.Publisher(settings)
        try:
            process.wait_ready(
                service,
                lambda: (
                    health_status(f"127.0.0.1:{port}", "relevance.v1.TeacherLabeling") == "SERVING"
                ),
                what="teacher-labeling",
                timeout_s=300,
                log_path=log_path,
            )

            def label_all(batches: dict[str, list[dict]], tag: str) -> None:
                expected = sum(len(products) for products in batches.values())
                for i, (query, products) in enumerate(batches.items()):
                    message = topics_pb2.CandidateBatch(
                        query_id=f"{tag}-{i}",
                        query=query,
                        products=[product_message(p) for p in products],
                    )
                    publisher.publish(CANDIDATES, message.query_id, message)
                publisher.flush()
                seen = 0
                while seen < expected:
                    for records in consumer.poll(timeout_ms=500).values():
                        seen += sum(
                            LABELS.decode(r.value).query_id.startswith(tag) for r in records
                        )

            # Warm-up: the service's first group join and first batch are not throughput.
            label_all(dict(list(by_query.items())[:1]), "warmup")
            start = time.perf_counter()
            label_all(by_query, "bench")
            return len(batch) / (time.perf_counter() - start)
        finally:
            publisher.close()
            consumer.close()
            process.stop(service, 60)


def main(
    checkpoint: Annotated[Path, typer.Option(help="Classifier teacher checkpoint.")] = Path(
        ".relkd/models/teacher"
    ),
    dataset: Annotated[Path, typer.Option(help="Dataset directory.")] = Path(".relkd/data/sim"),
    split: Annotated[str, typer.Option(help="Split whose judged pairs are labeled.")] = "test",
    pairs: Annotated[int, typer.Option(help="Pairs to label on each side.")] = 512,
    max_tokens: Annotated[int, typer.Option(help="Labeler token budget per batch.")] = 16384,
    out: Annotated[Path, typer.Option(help="Result JSON.")] = RESULTS,
) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    judged = load_split(dataset, split)[:pairs]
    if not judged:
        raise typer.BadParameter(f"{dataset}: no judged pairs in split {split!r}")
    batch = [(p.query, p.product) for p in judged]

    kafka_rate = kafka_pairs_per_s(checkpoint, batch)
    labeler = TeacherLabeler.from_checkpoint(checkpoint, device="cpu", max_tokens=max_tokens)
    if labeler.kind != "classifier":
        raise typer.BadParameter(f"{checkpoint}: the naive baseline needs a classifier teacher")
    labeler.label(batch[:8])  # warm-up: first-call allocations and lazy init
    start = time.perf_counter()
    labeler.label(batch)
    batched_s = time.perf_counter() - start

    texts = [render(labeler.template, query, product) for query, product in batch]
    naive = pipeline(
        "text-classification",
        model=labeler.model,
        tokenizer=labeler.tokenizer,
        device=-1,
        top_k=None,
        truncation=True,
        max_length=labeler.max_length,
    )
    naive(texts[0])
    start = time.perf_counter()
    for text in texts:
        naive(text)
    naive_s = time.perf_counter() - start

    result = {
        "checkpoint": str(checkpoint),
        "teacher": f"{labeler.name}@{labeler.version}",
        "pairs": len(batch),
        "max_length": labeler.max_length,
        "max_tokens": max_tokens,
        "batches": labeler.stats.batches - 1,
        "kafka_service_pairs_per_s": round(kafka_rate, 2),
        "batched_pairs_per_s": round(len(batch) / batched_s, 2),
        "kafka_vs_batched": round(kafka_rate / (len(batch) / batched_s), 3),
        "naive_pipeline_pairs_per_s": round(len(batch) / naive_s, 2),
        "speedup": round(naive_s / batched_s, 2),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "note": "CPU, shared machine; compare ratios, not absolute rates",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
