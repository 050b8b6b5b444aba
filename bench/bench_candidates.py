"""Candidate generation benchmark: Generate latency, batch throughput, recall@100.

    python bench/bench_candidates.py --products 100000

1. simulates a catalog (`training.data.simulator.simulate`) and builds the hybrid
   index once (cached under --work-dir; encoding dominates: minutes at 100k);
2. `Generate` latency, k=100, through a real gRPC server on loopback, one request
   at a time, over the simulated queries (p50/p99), plus the in-process search time;
3. batch generation throughput: `run_batch` publishing spectrum-sampled batches to
   an embedded Tansu broker (pairs acknowledged per second);
4. recall@100 of Exact products on the test queries for BM25, dense and fused.

Writes bench/results/candidates-<products>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import torch
from relevance.v1 import candidate_generation_pb2, candidate_generation_pb2_grpc

from services.candidate_generation.batch import Ledger, run_batch
from services.candidate_generation.evaluation import exact_recall
from services.candidate_generation.index import CatalogIndex, MiniLMEncoder
from services.candidate_generation.queries import QueryRecord
from services.candidate_generation.service import CandidateEngine, build_server
from services.candidate_generation.settings import CandidateSettings
from services.core.broker import EmbeddedBroker, create_topics, free_port
from services.core.bus import Publisher
from services.core.settings import Settings
from training.data import storage
from training.data.simulator import simulate

RESULTS_DIR = Path(__file__).parent / "results"


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def prepare(work: Path, products: int, queries: int, encoder: MiniLMEncoder) -> tuple[Path, Path]:
    dataset, index_dir = work / f"sim-{products}", work / f"index-{products}"
    if not (dataset / "manifest.json").exists():
        simulate(dataset, num_products=products, num_queries=queries, show_progress=True)
    if not (index_dir / "manifest.json").exists():
        start = time.perf_counter()
        index = CatalogIndex.build(storage.read_table(dataset, "products"), encoder, progress=True)
        index.save(index_dir)
        (index_dir / "build_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return dataset, index_dir


async def grpc_latency(engine: CandidateEngine, texts: list[str], k: int) -> list[float]:
    server = build_server(engine, Settings(), port=free_port())
    await server.start()
    samples: list[float] = []
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = candidate_generation_pb2_grpc.CandidateGenerationStub(channel)
            for i, text in enumerate(texts):
                start = time.perf_counter()
                reply = await stub.Generate(
                    candidate_generation_pb2.GenerateRequest(query=text, k=k)
                )
                elapsed = time.perf_counter() - start
                if len(reply.candidates) != k:
                    raise RuntimeError(
                        f"Generate returned {len(reply.candidates)} candidates, not {k}"
                    )
                if i >= 5:  # the first calls warm up the channel and the model
                    samples.append(elapsed)
    finally:
        await server.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000, help="labeled queries to simulate")
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--batch-queries", type=int, default=500)
    parser.add_argument("--per-query", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--work-dir", type=Path, default=Path(".relkd/bench/candidates"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    encoder = MiniLMEncoder()
    dataset, index_dir = prepare(args.work_dir, args.products, args.queries, encoder)
    start = time.perf_counter()
    index = CatalogIndex.load(index_dir, encoder)
    load_s = time.perf_counter() - start
    engine = CandidateEngine(
        index, encoder, CandidateSettings(index_dir=index_dir, per_query=args.per_query)
    )
    table = storage.read_table(dataset, "queries", ["query_id", "query", "split"])
    records = [
        QueryRecord(q, t, s)
        for q, t, s in zip(*(table[c].to_pylist() for c in table.column_names), strict=True)
    ]
    texts = [r.query for r in records][: args.latency_requests + 5]

    grpc_samples = asyncio.run(grpc_latency(engine, texts, 100))
    search_samples = []
    for text in texts[5:]:
        t0 = time.perf_counter()
        index.search(text, 100)
        search_samples.append(time.perf_counter() - t0)

    batch_queries = records[: args.batch_queries]
    state = args.work_dir / "batch-state"
    shutil.rmtree(state, ignore_errors=True)
    with EmbeddedBroker("tansu") as broker:
        create_topics(broker.bootstrap)
        publisher = Publisher(Settings(), bootstrap=broker.bootstrap)
        ledger = Ledger(state / "ledger.sqlite")
        try:
            report = run_batch(
                index, engine.sampler(), batch_queries, publisher, ledger, progress=True
            )
        finally:
            publisher.close()
            ledger.close()

    recall = exact_recall(index, dataset, k=100, split="test", progress=True)
    result = {
        "products": len(index),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0],
        },
        "index_build_seconds": float((index_dir / "build_seconds.txt").read_text()),
        "index_load_seconds": load_s,
        "generate_k100_grpc": percentiles(grpc_samples),
        "search_k100_in_process": percentiles(search_samples),
        "batch": {
            "queries": report.queries_published,
            "per_query": args.per_query,
            "pairs": report.pairs_published,
            "seconds": report.seconds,
            "pairs_per_second": report.pairs_per_second,
        },
        "recall_at_100_exact_test": recall,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"candidates-{args.products}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
