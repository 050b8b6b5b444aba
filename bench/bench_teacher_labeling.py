"""Teacher labeling throughput: token-budget batching vs a naive one-pair-at-a-time pipeline.

Both sides label the same judged pairs with the same checkpoint and the same input text
(the teacher's template); the naive side is Hugging Face's
``pipeline("text-classification")`` called once per pair, the way a first prototype of a
labeling service would. Results go to ``bench/results/teacher_labeling.json``; the lead
adds the through-Kafka number of the teacher-labeling service next to them.

    python bench/bench_teacher_labeling.py --checkpoint .relkd/models/teacher \
        --dataset .relkd/data/sim --pairs 512
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from transformers import pipeline

from training.teacher.data import load_split
from training.teacher.labeler import TeacherLabeler
from training.teacher.templates import render

RESULTS = Path(__file__).parent / "results" / "teacher_labeling.json"


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
        "batched_pairs_per_s": round(len(batch) / batched_s, 2),
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
