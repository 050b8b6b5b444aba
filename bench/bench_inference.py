"""Score latency and throughput of the student: gRPC service + Triton, in-process ONNX
Runtime, sentence-transformers' ``CrossEncoder.predict``, and the two-tower path.

    python bench/bench_inference.py [--checkpoint DIR] [--products 100] [--scale 1.0]
                                    [--repeats 3] [--out bench/results/inference.json]

Every request is one query with ``--products`` candidates. Each path runs closed-loop
clients at concurrency 1, 8 and 32 (each client sends its next request when the last
one returns), in one run on the same model. On a shared machine the paths are
interleaved: all of them are up at once and each of ``--repeats`` rounds runs every
path once, in a rotated order; each figure is the median of the rounds with their
min/max, and the load average is recorded before and after. Paths:

* ``grpc_triton`` - a frontend-style grpc.aio client -> the student-inference service
  (its own process, TritonBackend) -> tritonserver (CPU, Python backend running the
  same ONNX graph with onnxruntime);
* ``in_process`` - the same ``model.onnx`` and ``tokenizer.json`` called directly
  (tokenizers + onnxruntime, same thread count as the Triton model);
* ``sentence_transformers`` - ``CrossEncoder(model_dir).predict`` on the checkpoint;
* ``two_tower_grpc`` / ``two_tower_int8_grpc`` - the service with TwoTowerBackend
  (precomputed product embeddings, in-process fp32 / per-channel int8 query tower, run
  on the event loop's thread);
* ``two_tower_int8_grpc_threaded`` - the same with the query tower in a worker thread
  (``RELKD_QUERY_TOWER_INLINE=false``);
* ``two_tower_in_process`` / ``two_tower_int8_in_process`` - the same backend's
  ``score_blocking`` called directly (what Score runs, without gRPC);
* ``two_tower_int8_grpc_zipf`` - ``two_tower_int8_grpc`` under a Zipf query mix.

Every two-tower request of the other paths carries a query its service (or backend) has
not seen before: the query embedding cache never hits, so they measure the query
tower on every request. ``two_tower_int8_grpc_zipf`` draws its queries from the same
distinct queries with probability ``1 / rank**ZIPF_EXPONENT`` (head queries repeat, as
in search traffic) and reports the cache's hit rate, read from the service's own
``relkd_query_embedding_cache_total`` counter (``query_cache`` in the results file, for
every two-tower path). The services run as ``python -m services.serve student-inference``
does in a container (JSON logs, one line per RPC, to a file).

``--paths`` runs a subset. Besides wall-clock latency, every figure carries the CPU time
the bench's processes (this one, the services, tritonserver and its stubs) spent per
request, by group (:class:`CpuMeter`): on a loaded machine the wall clock mostly
measures the other tenants, the CPU time does not.

Without ``--checkpoint`` the cross-encoder is all-MiniLM-L6-v2 cut to the trainer's
default layer count with a fresh 4-grade head (speed does not depend on training).
Also measured: this machine's float32 matmul FLOP/s and the cross-encoder's FLOPs per
request, giving how close each path comes to the compute limit; and the Score
tokenization share: the query tokenized and the pair rows assembled from cached product
ids (``training/export/triton_models/pair_tokens.py``), against the full pair
tokenization it replaced, as a share of the Score call's c=1 p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import psutil
import pyarrow.parquet as pq
import torch
from prometheus_client.parser import text_string_to_metric_families
from relevance.v1 import student_inference_pb2, student_inference_pb2_grpc
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr
from sentence_transformers import CrossEncoder
from tokenizers import Tokenizer
from transformers import AutoConfig

from contracts.artifacts import read_student_spec
from contracts.schema import NUM_GRADES
from ops.stack import health_status
from services.core import process
from services.core.broker import free_port
from services.student_inference.backends import (
    TwoTowerBackend,
    TwoTowerSettings,
    triton_env,
    two_tower_env,
)
from services.student_inference.triton_runtime import TritonServer, setup_venv
from training.data.settings import DataSettings
from training.data.simulator import (
    DEFAULT_QUERY_MIX,
    _query_lengths,
    make_catalog,
    make_queries,
    render_products,
)
from training.export.exporter import export_student
from training.export.triton_models.pair_tokens import PairAssembler, ProductTokenCache
from training.export.triton_repo import write_cpu_repository
from training.student.config import StudentTrainConfig
from training.student.models.cross_encoder import CrossEncoderStudent
from training.student.models.two_tower import TwoTowerStudent

CONCURRENCY = (1, 8, 32)
CROSS_ENCODER_PATHS = (
    "in_process",
    "sentence_transformers",
    "grpc_triton",
    "grpc_triton_int8",
)
TWO_TOWER_PATHS = (
    "two_tower_in_process",
    "two_tower_int8_in_process",
    "two_tower_grpc",
    "two_tower_int8_grpc",
    "two_tower_int8_grpc_threaded",
    "two_tower_int8_grpc_zipf",
)
# Requests per client at each concurrency (times --scale). A request is ~17 GFLOP on
# 2 shared cores, so these are small; the p99 of c=1 rests on 60 samples.
REQUESTS = {1: 60, 8: 12, 32: 4}
WARMUP = 10
THREADS = 2  # intra-op threads of every path: the cores this machine has.
# Two-tower requests per client are this multiple of REQUESTS (300 at c=1 per round).
TWO_TOWER_SCALE = 5.0
STOP_GRACE_S = 30.0  # a service's SIGTERM grace before its group is killed
# Query popularity of the Zipf path: probability 1 / rank**s over the distinct queries.
ZIPF_EXPONENT = 1.0
# Product sets the two-tower requests pick from (the products' truncation memo is
# bounded by the catalog: products repeat across requests, as a catalog's do).
PRODUCT_PICKS = 64
QUERIES = [
    "grey fabric sofa",
    "oak writing desk with drawers",
    "floor lamp linen shade",
    "wool area rug 5x8",
    "ergonomic office chair",
    "king size bed frame",
    "outdoor patio dining set",
    "kids bookshelf white",
]
# Tokenizer encoding attribute behind each ONNX input name.
ENCODING_FIELDS = {
    "input_ids": "ids",
    "attention_mask": "attention_mask",
    "token_type_ids": "type_ids",
}
console = Console()


def catalog(count: int, directory: Path) -> tuple[Path, list[dict[str, str]]]:
    """Simulated listings (Parquet, for the two-tower export) and their request form."""
    rng = np.random.default_rng(0)
    table = render_products(make_catalog(count, rng), 0, count, rng)
    path = directory / "products.parquet"
    pq.write_table(table, path)
    rows = table.select(["product_id", "title", "product_type", "brand"]).to_pylist()
    return path, [{k: v or "" for k, v in row.items()} for row in rows]


def simulated_queries(catalog_size: int, count: int) -> list[str]:
    """``count`` distinct simulated search queries (different token ids each), written
    from the products of :func:`catalog` (same seed) with the simulator's query mix and
    the real WANDS query lengths when ``RELKD_WANDS_QUERIES`` is at hand."""
    products = make_catalog(catalog_size, np.random.default_rng(0))
    lengths = _query_lengths(DataSettings().wands_queries)
    written = make_queries(products, count, np.random.default_rng(2), DEFAULT_QUERY_MIX, lengths)
    if len(written) < count:
        raise ValueError(f"the simulator wrote {len(written)} distinct queries, not {count}")
    return [query.text for query in written]


def build_students(directory: Path, checkpoint: Path | None) -> tuple[Path, Path]:
    """(cross-encoder, two-tower) checkpoints with the trainer's default shape."""
    defaults = StudentTrainConfig(dataset_dir=directory)
    shape = {
        "num_layers": defaults.num_layers,
        "max_length": defaults.max_length,
        "text_fields": defaults.text_fields,
    }
    if checkpoint is None:
        checkpoint = directory / "cross-encoder"
        torch.manual_seed(0)
        CrossEncoderStudent.from_base(**shape).save(checkpoint, name="relkd-student", version="1")
    two_tower = directory / "two-tower"
    TwoTowerStudent.from_base(**shape).save(two_tower, name="relkd-two-tower", version="1")
    return checkpoint, two_tower


class CpuMeter:
    """CPU seconds (user + system) used by each group of the bench's processes.

    Wall-clock latency on a shared machine mostly measures the other tenants; the CPU
    time a path's processes spend per request does not depend on them (much: caches
    and memory bandwidth are shared too), so it is the figure to compare paths by
    under load. Groups: ``bench`` (this process: the clients and the in-process
    paths), ``service`` (student-inference processes), ``triton`` (tritonserver and
    its Python-backend stubs). Only one path runs at a time, so a sweep's CPU is its
    path's (plus the idle processes' polling, which is small).
    """

    def __init__(self) -> None:
        self.groups: dict[str, list[psutil.Process]] = {"bench": [psutil.Process()]}

    def add(self, group: str, pid: int) -> None:
        self.groups.setdefault(group, []).append(psutil.Process(pid))

    def snapshot(self) -> dict[str, float]:
        # The services and tritonserver are this process's children: each process is
        # counted in the group whose root is nearest, never also in ``bench``.
        roots_elsewhere = {
            root.pid for group, roots in self.groups.items() if group != "bench" for root in roots
        }
        totals = {}
        for group, roots in self.groups.items():
            total = 0.0
            for root in roots:
                for member in [root, *_descendants(root, roots_elsewhere - {root.pid})]:
                    try:
                        times = member.cpu_times()
                    except psutil.NoSuchProcess:
                        continue
                    # A process's own time plus its exited children's (the stubs').
                    total += times.user + times.system + times.children_user
                    total += times.children_system
            totals[group] = total
        return totals


def _descendants(root: psutil.Process, stop_at: set[int]) -> list[psutil.Process]:
    """``root``'s descendants, leaving out the subtrees of the ``stop_at`` pids."""
    found = []
    try:
        children = root.children()
    except psutil.NoSuchProcess:
        return found
    for child in children:
        if child.pid not in stop_at:
            found += [child, *_descendants(child, stop_at)]
    return found


class Stats(dict[str, Any]):
    @classmethod
    def of(cls, latencies: list[float], wall_s: float, cpu_s: dict[str, float]) -> Stats:
        ms = np.asarray(latencies) * 1000
        cpu_ms = {g: round(1000 * v / len(ms), 2) for g, v in cpu_s.items() if v > 0}
        return cls(
            p50_ms=round(float(np.percentile(ms, 50)), 2),
            p99_ms=round(float(np.percentile(ms, 99)), 2),
            rps=round(len(ms) / wall_s, 1),
            requests=len(ms),
            cpu_ms_per_request=round(sum(cpu_ms.values()), 2),
            cpu_ms_by_group=cpu_ms,
        )


async def closed_loop(
    call: Callable[[int], Awaitable[Any]],
    concurrency: int,
    per_client: int,
    warmup: int,
    meter: CpuMeter,
) -> Stats:
    latencies: list[float] = []

    async def client(worker: int) -> None:
        for i in range(per_client):
            start = time.perf_counter()
            await call(worker * per_client + i)
            latencies.append(time.perf_counter() - start)

    for i in range(warmup):
        await call(i)
    cpu_before = meter.snapshot()
    start = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(concurrency)))
    wall_s = time.perf_counter() - start
    cpu_after = meter.snapshot()
    cpu_s = {g: cpu_after[g] - cpu_before.get(g, 0.0) for g in cpu_after}
    return Stats.of(latencies, wall_s, cpu_s)


async def sweep(
    name: str,
    make_call: Callable[[int], Callable[[int], Awaitable[Any]]],
    scale: float,
    levels: tuple[int, ...],
    meter: CpuMeter,
) -> dict[str, Stats]:
    results = {}
    for c in levels:
        per_client = max(2, int(REQUESTS[c] * scale))
        warmup = max(2, int(WARMUP * min(scale, 1.0)))
        stats = await closed_loop(make_call(c), c, per_client, warmup, meter)
        console.log(f"{name} c={c}: {stats}")
        results[f"c{c}"] = stats
    return results


def serving_cpu_ms(stats: dict[str, Any], path: str) -> float:
    """CPU ms per request of the processes that serve ``path`` (not its clients')."""
    groups = ("service", "triton") if path.startswith("grpc_") else ("bench",)
    return sum(stats["cpu_ms_by_group"].get(g, 0.0) for g in groups)


def summarise(rounds: list[dict[str, Stats]]) -> dict[str, dict[str, Any]]:
    """Per concurrency: the median of the rounds for each figure, with min/max."""
    summary: dict[str, dict[str, Any]] = {}
    for level in rounds[0]:
        figures = {
            k: [r[level][k] for r in rounds]
            for k in ("p50_ms", "p99_ms", "rps", "cpu_ms_per_request")
        }
        groups = rounds[0][level]["cpu_ms_by_group"]
        summary[level] = {
            **{k: round(float(np.median(v)), 2) for k, v in figures.items()},
            "requests": sum(r[level]["requests"] for r in rounds),
            "cpu_ms_by_group": {
                g: round(
                    float(np.median([r[level]["cpu_ms_by_group"].get(g, 0.0) for r in rounds])), 2
                )
                for g in groups
            },
            "min_max": {k: [min(v), max(v)] for k, v in figures.items()},
        }
    return summary


def tokenization_ms(
    export_dir: Path, max_length: int, texts: list[tuple[str, list[str]]], repeats: int = 30
) -> dict[str, float]:
    """Median ms per request: full pair tokenization vs query + rows from cached ids."""
    tokenizer_json = str(export_dir / "tokenizer" / "tokenizer.json")
    full = Tokenizer.from_file(tokenizer_json)
    full.enable_truncation(max_length, strategy="longest_first")
    full.enable_padding()
    assembler = PairAssembler(tokenizer_json, max_length, pad_id=0)
    cache = ProductTokenCache(assembler)
    ids = [[f"{q}/{i}" for i in range(len(batch))] for q, batch in texts]
    for (_, batch), keys in zip(texts, ids, strict=True):
        cache.put(keys, batch)

    def cached(query: str, keys: list[str], batch: list[str]) -> None:
        (encoding,) = assembler.encode([query])
        assembler.assemble(encoding.ids, cache.get(keys, batch))

    timings: dict[str, list[float]] = {"full_pairs_ms": [], "cached_products_ms": []}
    for i in range(repeats):
        query, batch = texts[i % len(texts)]
        start = time.perf_counter()
        full.encode_batch([(query, t) for t in batch])
        timings["full_pairs_ms"].append(time.perf_counter() - start)
        start = time.perf_counter()
        cached(query, ids[i % len(texts)], batch)
        timings["cached_products_ms"].append(time.perf_counter() - start)
    return {k: round(float(np.median(v)) * 1000, 3) for k, v in timings.items()}


def grpc_call(
    address: str, request_of: Callable[[int], student_inference_pb2.ScoreRequest]
) -> Callable[[int], Callable[[int], Awaitable[Any]]]:
    channel = grpc.aio.insecure_channel(address)
    stub = student_inference_pb2_grpc.StudentInferenceStub(channel)

    def make(_: int) -> Callable[[int], Awaitable[Any]]:
        async def call(i: int) -> Any:
            return await stub.Score(request_of(i), timeout=30)

        return call

    return make


def two_tower_requests(
    queries: list[str],
    rows: list[dict[str, str]],
    products: int,
    count: int,
    rng: np.random.Generator,
    zipf: float | None = None,
) -> list[student_inference_pb2.ScoreRequest]:
    """``count`` requests: the queries in order, each once, or with ``zipf``, drawn with
    probability ``1 / rank**zipf`` (rank: position in ``queries``)."""
    if zipf is None:
        if count > len(queries):
            raise ValueError(f"{count} requests need as many distinct queries, not {len(queries)}")
        chosen = queries[:count]
    else:
        weights = 1.0 / np.arange(1, len(queries) + 1) ** zipf
        chosen = [queries[k] for k in rng.choice(len(queries), count, p=weights / weights.sum())]
    picks = [rng.choice(len(rows), products, replace=False) for _ in range(PRODUCT_PICKS)]
    return [
        student_inference_pb2.ScoreRequest(
            query=query, products=[rows[i] for i in picks[n % PRODUCT_PICKS]]
        )
        for n, query in enumerate(chosen)
    ]


def next_of(
    requests: list[student_inference_pb2.ScoreRequest],
) -> Callable[[int], student_inference_pb2.ScoreRequest]:
    """Each call the next request of ``requests`` (the index asked for is ignored), so
    no request repeats across warm-ups, levels and rounds."""
    stream = iter(requests)
    return lambda _: next(stream)


def sent_per_path(scale: float, levels: tuple[int, ...], repeats: int) -> int:
    """Requests one path sends in a run (warm-ups included), as :func:`sweep` sends them."""
    per_round = sum(
        max(2, int(WARMUP * min(scale, 1.0))) + c * max(2, int(REQUESTS[c] * scale)) for c in levels
    )
    return repeats * per_round


def query_tokens_mean(
    export_dir: Path, requests: list[student_inference_pb2.ScoreRequest]
) -> float:
    """Mean tokens the query tower reads per request ([CLS] and [SEP] included)."""
    spec = read_student_spec(export_dir)
    tokenizer = Tokenizer.from_file(str(export_dir / "tokenizer" / "tokenizer.json"))
    tokenizer.enable_truncation(spec.max_length)
    tokenizer.no_padding()
    encodings = tokenizer.encode_batch([r.query for r in requests])
    return round(float(np.mean([len(e.ids) for e in encodings])), 2)


def cache_counts(metrics_url: str) -> dict[str, float]:
    """The service's query embedding cache hits and misses (its Prometheus counter)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    counts = {"hit": 0.0, "miss": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == "relkd_query_embedding_cache":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["outcome"]] = sample.value
    return counts


def cache_summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Per round hits and misses (every level, warm-ups included) -> the hit rates."""
    rates = [r["hit"] / (r["hit"] + r["miss"]) if r["hit"] + r["miss"] else 0.0 for r in rounds]
    return {
        "hit_rate": round(float(np.median(rates)), 3),
        "hit_rate_by_round": [round(r, 3) for r in rates],
        "hits": int(sum(r["hit"] for r in rounds)),
        "misses": int(sum(r["miss"] for r in rounds)),
    }


def threaded_call(fn: Callable[[int], Any]) -> Callable[[int], Callable[[int], Awaitable[Any]]]:
    """Calls ``fn(request index)`` in a pool of ``concurrency`` threads."""

    def make(concurrency: int) -> Callable[[int], Awaitable[Any]]:
        pool = ThreadPoolExecutor(concurrency)

        async def call(i: int) -> Any:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, i)

        return call

    return make


class InProcess:
    """The exported cross-encoder called directly: tokenizers + onnxruntime."""

    def __init__(self, export_dir: Path, max_length: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(export_dir / "tokenizer" / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length, strategy="longest_first")
        self.tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: they share the cores with the
        # server's own threads (measured on 2 loaded cores: 16 % less CPU per request
        # and a lower median, docs/triton.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(export_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.names = [i.name for i in self.session.get_inputs()]

    def encode(self, query: str, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch([(query, t) for t in texts])
        fields = {
            "input_ids": "ids",
            "attention_mask": "attention_mask",
            "token_type_ids": "type_ids",
        }
        return {
            n: np.asarray([getattr(e, fields[n]) for e in encodings], np.int64) for n in self.names
        }

    def __call__(self, query: str, texts: list[str]) -> np.ndarray:
        (score,) = self.session.run(["score"], self.encode(query, texts))
        return score


def sentence_transformers_scorer(model_dir: Path, max_length: int) -> Callable[..., np.ndarray]:
    model = CrossEncoder(str(model_dir), device="cpu", max_length=max_length, local_files_only=True)
    grades = np.arange(NUM_GRADES, dtype=np.float32)

    def predict(query: str, texts: list[str]) -> np.ndarray:
        # Raw logits: the student's score is the expected grade over the first
        # NUM_GRADES logits plus the free score logit after them (when it has one).
        logits = np.asarray(
            model.predict(
                [(query, t) for t in texts],
                batch_size=len(texts),
                activation_fn=torch.nn.Identity(),
            ),
            dtype=np.float64,
        )
        grade_logits = logits[:, :NUM_GRADES]
        probs = np.exp(grade_logits - grade_logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        free = logits[:, NUM_GRADES] if logits.shape[1] > NUM_GRADES else 0.0
        return probs @ grades + free

    return predict


async def score_all(
    address: str, requests: list[student_inference_pb2.ScoreRequest]
) -> list[np.ndarray]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = student_inference_pb2_grpc.StudentInferenceStub(channel)
        replies = [await stub.Score(r, timeout=120) for r in requests]
    return [np.array([s.score for s in reply.scores]) for reply in replies]


def agreement(reference: list[np.ndarray], scores: list[np.ndarray]) -> dict[str, float]:
    """How far a path's scores are from the fp32 ONNX graph's, per query."""
    return {
        "max_abs_diff": float(
            max(np.abs(r - s).max() for r, s in zip(reference, scores, strict=True))
        ),
        "min_spearman": float(
            min(spearmanr(r, s).statistic for r, s in zip(reference, scores, strict=True))
        ),
    }


def matmul_flops(m: int, k: int, n: int, seconds: float = 1.5) -> tuple[float, float]:
    """Float32 GEMM FLOP/s on THREADS threads for an [m,k] x [k,n] product: per
    wall-clock second, and per CPU-second of this process (one core's peak, which a
    loaded machine does not lower the way it lowers the wall-clock figure)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    flops = 2 * m * k * n * count
    return flops / (time.perf_counter() - start), flops / (time.process_time() - cpu_start)


def model_flops(model_dir: Path, batch: int, seq: int) -> float:
    """Forward FLOPs of a BERT-like cross-encoder on [batch, seq] tokens (GEMMs only)."""
    config = AutoConfig.from_pretrained(model_dir)
    h, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = batch * seq
    per_layer = 2 * tokens * (4 * h * h + 2 * h * ff) + 2 * 2 * batch * seq * seq * h
    head = 2 * batch * (h * h + h * config.num_labels)
    return float(layers * per_layer + head)


@dataclass(frozen=True)
class Service:
    process: subprocess.Popen[bytes]
    address: str
    metrics_url: str


def start_service(env: dict[str, str], log_path: Path) -> Service:
    """A student-inference process on free loopback ports, once it serves; it dies with
    this process (``services.core.process.spawn``). Stop it with ``process.stop``."""
    port, metrics_port = free_port(), free_port()
    full = {**os.environ, **env, "RELKD_STUDENT_INFERENCE_PORT": str(port)}
    full["RELKD_METRICS_PORT"] = str(metrics_port)
    # What a container runs (`relkd serve student-inference` without the whole CLI):
    # JSON logs included, one line per RPC.
    command = [sys.executable, "-m", "services.serve", "student-inference"]
    service = process.spawn(command, log_path, full)
    address = f"127.0.0.1:{port}"
    try:
        process.wait_ready(
            service,
            lambda: health_status(address, "relevance.v1.StudentInference") == "SERVING",
            what="student-inference",
            timeout_s=120,
            log_path=log_path,
        )
    except BaseException:
        process.stop(service, STOP_GRACE_S)
        raise
    return Service(service, address, f"http://127.0.0.1:{metrics_port}/metrics")


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    products_path, rows = catalog(max(1000, args.products * 4), work)
    ce_checkpoint, tt_checkpoint = build_students(work, args.checkpoint)
    max_length = read_student_spec(ce_checkpoint).max_length
    ce_export, tt_export = work / "ce-export", work / "tt-export"
    console.log("exporting students")
    export_student(ce_checkpoint, ce_export, int8=True)
    export_student(tt_checkpoint, tt_export, int8=True, products=products_path)

    rng = np.random.default_rng(1)
    picks = [rng.choice(len(rows), args.products, replace=False) for _ in QUERIES]
    requests = [
        student_inference_pb2.ScoreRequest(query=q, products=[rows[i] for i in pick])
        for q, pick in zip(QUERIES, picks, strict=True)
    ]
    texts = [(q, [rows[i]["title"] for i in pick]) for q, pick in zip(QUERIES, picks, strict=True)]
    selected = set(args.paths)
    # A two-tower path's requests never repeat a query (but the Zipf path's).
    tt_scale = max(args.scale, TWO_TOWER_SCALE)
    tt_sent = sent_per_path(tt_scale, args.concurrency, args.repeats)
    queries = simulated_queries(len(rows), max(tt_sent, 4000))
    distinct = two_tower_requests(queries, rows, args.products, tt_sent, rng)
    zipf = two_tower_requests(queries, rows, args.products, tt_sent, rng, zipf=ZIPF_EXPONENT)

    in_process = InProcess(ce_export, max_length)
    st_predict = (
        sentence_transformers_scorer(ce_checkpoint / "model", max_length)
        if "sentence_transformers" in selected
        else None
    )
    two_tower = {
        int8: TwoTowerBackend(TwoTowerSettings(student_export_dir=tt_export, query_tower_int8=int8))
        for int8 in (False, True)
    }

    def request_of(i: int) -> tuple[str, list[str]]:
        return texts[i % len(texts)]

    def tower_call(int8: bool) -> Callable[[int], Any]:
        next_request = next_of(distinct)

        def call(i: int) -> Any:
            request = next_request(i)
            # What the service's Score runs (TwoTowerBackend.score).
            return two_tower[int8].score_blocking(request.query, request.products)

        return call

    if selected & {"grpc_triton", "grpc_triton_int8"}:
        setup_venv(quiet=True)
    repository = work / "triton-repo"
    name = write_cpu_repository(ce_export, repository, cpu_threads=THREADS)
    # Speed only: the untrained head's int8 ranking fails the serving gate (its rho is
    # reported under quality), so the gate is lowered for this measurement.
    int8_name = write_cpu_repository(
        ce_export,
        repository,
        model_name=f"{name}-int8",
        cpu_threads=THREADS,
        int8=True,
        int8_min_spearman=-1.0,
    )
    served = {
        path: model
        for path, model in {"grpc_triton": name, "grpc_triton_int8": int8_name}.items()
        if path in selected
    }
    served_scores: dict[str, list[np.ndarray]] = {}
    processes: list[subprocess.Popen[bytes]] = []
    metrics_urls: dict[str, str] = {}
    meter = CpuMeter()
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        server = None
        if served:
            server = stack.enter_context(
                TritonServer(repository, model_control="explicit", load_models=(name, int8_name))
            )
            assert server.pid is not None
            meter.add("triton", server.pid)
        try:
            in_process_paths: dict[str, Callable[[int], Any]] = {
                "in_process": lambda i: in_process(*request_of(i)),
                "sentence_transformers": lambda i: st_predict(*request_of(i)),  # type: ignore[misc]
                "two_tower_in_process": tower_call(int8=False),
                "two_tower_int8_in_process": tower_call(int8=True),
            }
            paths: dict[str, Callable[[int], Callable[[int], Awaitable[Any]]]] = {
                path: threaded_call(fn) for path, fn in in_process_paths.items() if path in selected
            }
            addresses = {}
            int8_env = {**two_tower_env(tt_export), "RELKD_QUERY_TOWER_INT8": "true"}
            # Closed-loop clients queue up to 32 requests at Triton's single model
            # instance; the bench measures queueing, so the outage guard must not cut it.
            patient = {"RELKD_TRITON_TIMEOUT_S": "120"}
            services = {
                **{
                    path: {**triton_env(server, model), **patient}
                    for path, model in served.items()
                    if server
                },
                "two_tower_grpc": two_tower_env(tt_export),
                "two_tower_int8_grpc": int8_env,
                "two_tower_int8_grpc_threaded": {**int8_env, "RELKD_QUERY_TOWER_INLINE": "false"},
                "two_tower_int8_grpc_zipf": int8_env,
            }
            for path, env in services.items():
                if path not in selected:
                    continue
                service = start_service(env, work / f"service-{path}.log")
                processes.append(service.process)
                meter.add("service", service.process.pid)
                addresses[path], metrics_urls[path] = service.address, service.metrics_url
                if path.startswith("two_tower"):
                    next_request = next_of(zipf if path.endswith("_zipf") else distinct)
                else:
                    next_request = lambda i: requests[i % len(requests)]  # noqa: E731
                paths[path] = grpc_call(addresses[path], next_request)
            # sentence-transformers is ~10x slower per request; fewer keep the run short.
            scales = {"sentence_transformers": args.scale / 4}
            # A two-tower request takes milliseconds: enough of them for a real p99.
            scales.update({p: tt_scale for p in paths if "two_tower" in p})
            rounds: dict[str, list[dict[str, Stats]]] = {p: [] for p in paths}
            # Query embedding cache hits and misses of each two-tower path, per round.
            cache_rounds: dict[str, list[dict[str, float]]] = {
                p: [] for p in paths if p.startswith("two_tower")
            }

            def counts(path: str) -> dict[str, float]:
                if path in metrics_urls:
                    return cache_counts(metrics_urls[path])
                cache = two_tower["int8" in path].query_cache
                assert cache is not None
                return {"hit": cache.hits, "miss": cache.misses}

            order = list(paths)
            for repeat in range(args.repeats):
                rotated = order[repeat % len(order) :] + order[: repeat % len(order)]
                for path in rotated:
                    before = counts(path) if path in cache_rounds else {}
                    rounds[path].append(
                        await sweep(
                            path,
                            paths[path],
                            scales.get(path, args.scale),
                            args.concurrency,
                            meter,
                        )
                    )
                    if path in cache_rounds:
                        after = counts(path)
                        cache_rounds[path].append({k: after[k] - before[k] for k in after})
            for path in served:
                served_scores[path] = await score_all(addresses[path], requests)
        finally:
            for service_process in processes:
                process.stop(service_process, STOP_GRACE_S)
    load_after = os.getloadavg()
    results: dict[str, Any] = {path: summarise(r) for path, r in rounds.items()}
    query_cache = {path: cache_summary(r) for path, r in cache_rounds.items()}

    cross_encoder = [p for p in CROSS_ENCODER_PATHS if p in results]
    quality: dict[str, Any] = {}
    if "in_process" in results:
        reference = [in_process(q, t) for q, t in texts]
        # Per-query std of the fp32 scores: rank agreement means little when the
        # scores barely differ (an untrained head).
        quality["fp32_score_spread"] = float(np.mean([r.std() for r in reference]))
        if st_predict is not None:
            quality["sentence_transformers"] = agreement(
                reference, [st_predict(q, t) for q, t in texts]
            )
        quality.update({p: agreement(reference, scores) for p, scores in served_scores.items()})
    tokenization: dict[str, float] = tokenization_ms(ce_export, max_length, texts)
    if "grpc_triton" in results:
        score_p50 = results["grpc_triton"]["c1"]["p50_ms"]
        tokenization["share_of_score_c1_p50_pct"] = round(
            100 * tokenization["cached_products_ms"] / score_p50, 2
        )
        tokenization["full_pairs_share_pct"] = round(
            100 * tokenization["full_pairs_ms"] / score_p50, 2
        )

    seq = int(in_process.encode(*texts[0])["input_ids"].shape[1])
    config = AutoConfig.from_pretrained(ce_checkpoint / "model")
    flops = model_flops(ce_checkpoint / "model", args.products, seq)
    gemm, gemm_per_cpu = matmul_flops(
        args.products * seq, config.hidden_size, config.intermediate_size
    )
    square, square_per_cpu = matmul_flops(1024, 1024, 1024)
    peak, core_peak = max(gemm, square), max(gemm_per_cpu, square_per_cpu)
    compute = {
        "flops_per_request": flops,
        "padded_seq_len": seq,
        "matmul_gflops_model_shape": round(gemm / 1e9, 1),
        "matmul_gflops_1024": round(square / 1e9, 1),
        "utilisation_at_saturation": {
            path: round(flops * max(s["rps"] for s in results[path].values()) / peak, 3)
            for path in cross_encoder
        },
        # The same from CPU time: the path's FLOPs per CPU-second of the processes that
        # compute it (the bench process in-process, else student-inference + Triton),
        # over one core's peak, both per CPU-second (on a loaded machine the wall
        # clock is shared, the CPU time is the path's own).
        "utilisation_per_cpu_second": {
            path: round(
                flops
                / (serving_cpu_ms(results[path][f"c{max(args.concurrency)}"], path) / 1000)
                / core_peak,
                3,
            )
            for path in cross_encoder
        },
        "matmul_gflops_per_cpu_second": round(core_peak / 1e9, 1),
        "min_latency_ms_at_peak": round(flops / peak * 1000, 2),
        "note": "fp32 FLOPs x requests/s over the fp32 matmul peak; int8 GEMMs can exceed 1",
    }
    best = {p: max(s["rps"] for s in results[p].values()) for p in results}
    c1 = {p: results[p]["c1"] for p in results if "c1" in results[p]}
    targets: dict[str, Any] = {}
    if "grpc_triton" in c1 and "in_process" in c1:
        grpc_c1, local_c1 = c1["grpc_triton"], c1["in_process"]
        targets.update(
            {
                "service_p50_overhead_c1_pct": round(
                    100 * (grpc_c1["p50_ms"] / local_c1["p50_ms"] - 1), 1
                ),
                "service_p99_vs_in_process_c1": round(grpc_c1["p99_ms"] / local_c1["p99_ms"], 2),
                "service_throughput_vs_in_process_pct": round(
                    100 * best["grpc_triton"] / best["in_process"], 1
                ),
                # Wall time on a loaded machine is mostly waiting for a core; the CPU
                # time spent per request is the load-independent comparison: the
                # serving processes (student-inference + Triton) against the
                # in-process path's (the clients' CPU is left out of both).
                "service_cpu_vs_in_process_c1": round(
                    serving_cpu_ms(grpc_c1, "grpc_triton") / serving_cpu_ms(local_c1, "in_process"),
                    3,
                ),
            }
        )
    if "sentence_transformers" in c1:
        for path in served:
            targets[f"{path}_speedup_vs_sentence_transformers"] = {
                "c1_p50": round(c1["sentence_transformers"]["p50_ms"] / c1[path]["p50_ms"], 2),
                "throughput": round(best[path] / best["sentence_transformers"], 2),
            }
    targets.update(
        {
            f"{path}_p50_p99_c1_ms": [c1[path]["p50_ms"], c1[path]["p99_ms"]]
            for path in TWO_TOWER_PATHS
            if path in c1
        }
    )
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads_per_path": THREADS,
            "shared": "2 cores shared with other engineers' work; numbers are noisy",
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "repeats": args.repeats,
            "concurrency": list(args.concurrency),
            "paths": sorted(args.paths),
            "scale": args.scale,
            "gpu": None,
        },
        "model": {
            "checkpoint": str(args.checkpoint) if args.checkpoint else "MiniLM-L6 cut (fresh head)",
            "layers": config.num_hidden_layers,
            "hidden": config.hidden_size,
            "max_length": max_length,
            "products_per_request": args.products,
            "two_tower_query_tokens_mean": query_tokens_mean(tt_export, distinct),
            "zipf_exponent": ZIPF_EXPONENT,
            "zipf_distinct_queries": len(queries),
        },
        "results": results,
        "query_cache": query_cache,
        "quality": quality,
        "compute": compute,
        "tokenization": tokenization,
        "targets": targets,
    }


def print_table(report: dict[str, Any]) -> None:
    table = Table(title="Score, 100 products per request")
    table.add_column("path")
    levels = report["machine"]["concurrency"]
    for c in levels:
        table.add_column(f"c={c} p50/p99 ms")
        table.add_column(f"c={c} req/s")
    for path, stats in report["results"].items():
        cells = []
        for c in levels:
            s = stats[f"c{c}"]
            cells += [f"{s['p50_ms']}/{s['p99_ms']}", str(s["rps"])]
        table.add_row(path, *cells)
    console.print(table)
    console.print(report["machine"], report["targets"], report["compute"], report["quality"])
    console.print(report["tokenization"], report["query_cache"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="Trained cross-encoder checkpoint.")
    parser.add_argument("--products", type=int, default=100, help="Products per request.")
    parser.add_argument("--scale", type=float, default=1.0, help="Multiplies request counts.")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=list(CONCURRENCY),
        choices=CONCURRENCY,
        help="Client concurrency levels to run (a subset keeps a loaded run short).",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        default=[*CROSS_ENCODER_PATHS, *TWO_TOWER_PATHS],
        choices=[*CROSS_ENCODER_PATHS, *TWO_TOWER_PATHS],
        help="Paths to run (a subset keeps a loaded run short).",
    )
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved rounds (>= 3).")
    parser.add_argument("--out", type=Path, default=Path("bench/results/inference.json"))
    args = parser.parse_args()
    args.concurrency = tuple(args.concurrency)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as work:
        report = asyncio.run(run(args, Path(work)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    console.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
