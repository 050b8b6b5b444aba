"""Candidate generation service: `relevance.v1.CandidateGeneration` and the relabel consumer.

* ``Generate(query, k)``: the fused top-k of the catalog index, for ad-hoc use.
* ``GenerateBatch(queries, per_query)``: spectrum-sampled candidates per query.
* A consumer group on ``relevance.relabel-requests.v1``:

  - ``ProductChanged``: the products are upserted into the index (which is saved
    again), then candidates are emitted for (a) the known queries closest to each
    changed product by embedding, carrying the changed products they matched, and
    (b) one synthetic query written from each changed product, with a full
    spectrum sample that includes the product;
  - ``NewQuery``: the query joins the known pool and gets a spectrum sample.

  Other kinds (teacher changed, disagreement) concern the teacher and are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from relevance.v1 import (
    candidate_generation_pb2,
    candidate_generation_pb2_grpc,
    common_pb2,
    topics_pb2,
)

from contracts.products import InvalidProduct, product_message, product_row, validate_products
from contracts.schema import Split
from contracts.topics import CANDIDATES, RELABEL_REQUESTS
from services.candidate_generation.batch import candidate_batch
from services.candidate_generation.index import CatalogIndex, Encoder, MiniLMEncoder
from services.candidate_generation.queries import (
    RELABEL,
    QueryRecord,
    query_id_for,
    read_query_log,
    simulator_queries,
    synthetic_query,
)
from services.candidate_generation.sampling import TOP, Candidate, SamplingConfig, SpectrumSampler
from services.candidate_generation.settings import CandidateSettings
from services.core import bus, metrics
from services.core.grpc_server import (
    FailedPrecondition,
    GrpcServer,
    ServiceBinding,
    check_deadline,
    require,
    require_count,
    require_unique,
)
from services.core.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = "relevance.v1.CandidateGeneration"
MAX_K = 1000


@dataclass
class QueryPool:
    """Known queries with their embeddings, to find the queries a changed product concerns."""

    records: list[QueryRecord] = field(default_factory=list)
    embeddings: np.ndarray | None = None

    def add(self, records: Sequence[QueryRecord], embeddings: np.ndarray) -> None:
        known = {r.query_id for r in self.records}
        keep = [i for i, r in enumerate(records) if r.query_id not in known]
        if not keep:
            return
        self.records += [records[i] for i in keep]
        new = embeddings[keep]
        self.embeddings = new if self.embeddings is None else np.concatenate([self.embeddings, new])

    def nearest(self, vectors: np.ndarray, m: int) -> list[list[QueryRecord]]:
        """The `m` known queries most similar (cosine) to each vector."""
        if self.embeddings is None or m == 0:
            return [[] for _ in range(len(vectors))]
        scores = vectors @ self.embeddings.T
        m = min(m, len(self.records))
        top = np.argpartition(-scores, m - 1, axis=1)[:, :m]
        return [
            [self.records[j] for j in row[np.argsort(-scores[i, row])]] for i, row in enumerate(top)
        ]


class CandidateEngine:
    """The index, sampler and query pool behind the RPCs, the relabel consumer and the CLI."""

    def __init__(
        self,
        index: CatalogIndex | None,
        encoder: Encoder,
        settings: CandidateSettings,
        labeled: frozenset[str] = frozenset(),
    ) -> None:
        self.index = index
        self.encoder = encoder
        self.settings = settings
        self.labeled = labeled
        self.pool = QueryPool()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: CandidateSettings, encoder: Encoder | None = None
    ) -> CandidateEngine:
        """Loads the saved index (if any) and the known-query pool named by the settings."""
        encoder = encoder or MiniLMEncoder()
        index = None
        if (settings.index_dir / "manifest.json").exists():
            index = CatalogIndex.load(settings.index_dir, encoder)
        else:
            log.warning("no catalog index yet", extra={"index_dir": str(settings.index_dir)})
        engine = cls(index, encoder, settings)
        if settings.query_pool is not None:
            engine.add_known_queries(load_query_pool(settings.query_pool))
        return engine

    def require_index(self) -> CatalogIndex:
        if self.index is None:
            raise FailedPrecondition(
                f"no catalog index in {self.settings.index_dir}; "
                "build one with `relkd candidates build-index`"
            )
        return self.index

    def sampler(self, per_query: int | None = None) -> SpectrumSampler:
        per_query = per_query or self.settings.per_query
        config = SamplingConfig(
            per_query=per_query,
            depth=max(per_query, self.settings.sample_depth),
            seed=self.settings.seed,
        )
        return SpectrumSampler(self.require_index(), config, self.labeled)

    def add_known_queries(self, records: Sequence[QueryRecord]) -> None:
        if records:
            self.pool.add(records, self.encoder.encode([r.query for r in records]))

    def products_changed(
        self, products: Sequence[dict[str, Any]]
    ) -> list[tuple[QueryRecord, list[Candidate]]]:
        """Upserts products, saves the index, and returns the candidates the change calls for."""
        with self._lock:
            if self.index is None:
                self.index = CatalogIndex.build(products, self.encoder)
            else:
                self.index.upsert(products)
            self.index.save(self.settings.index_dir)
        index = self.index
        ids = [p["product_id"] for p in products]
        rows = [index.row_of(pid) for pid in ids]
        vectors = index.embeddings[rows]
        by_query: dict[str, tuple[QueryRecord, list[Candidate]]] = {}
        for row, pid, known in zip(
            rows,
            ids,
            self.pool.nearest(vectors, self.settings.queries_per_changed_product),
            strict=True,
        ):
            for query in known:
                entry = by_query.setdefault(query.query_id, (query, []))
                entry[1].append(Candidate(pid, row, 0.0, 0, "relabel"))
        out = list(by_query.values())
        rng = np.random.default_rng(self.settings.seed)
        written = [synthetic_query(p, rng) for p in index.products_at(rows)]
        queries = [QueryRecord(query_id_for(text), text, RELABEL) for text in written]
        sampled = self.sampler().sample_queries([q.query_id for q in queries], written)
        for query, candidates, pid, row in zip(queries, sampled, ids, rows, strict=True):
            if pid not in {c.product_id for c in candidates}:
                # The product the request is about must be in its own query's batch.
                candidates = [Candidate(pid, row, 0.0, 0, "relabel"), *candidates[:-1]]
            out.append((query, candidates))
        return out

    def new_queries(
        self, queries: Sequence[QueryRecord]
    ) -> list[tuple[QueryRecord, list[Candidate]]]:
        """Adds queries to the known pool and samples their candidates."""
        self.add_known_queries(queries)
        sampled = self.sampler().sample_queries(
            [q.query_id for q in queries], [q.query for q in queries]
        )
        return list(zip(queries, sampled, strict=True))


def load_query_pool(path: Path) -> list[QueryRecord]:
    """Known queries from a dataset directory (every split) or a query log file."""
    if path.is_dir():
        return simulator_queries(path, Split.ALL)
    return read_query_log(path)


class RelabelHandler:
    """Consumer-group handler for relabel requests (see the module docstring)."""

    def __init__(self, engine: CandidateEngine, publisher: bus.Publisher) -> None:
        self.engine = engine
        self.publisher = publisher

    def __call__(
        self, deliveries: Sequence[bus.Delivery[topics_pb2.RelabelRequest]]
    ) -> list[bus.Rejection]:
        rejected: list[bus.Rejection] = []
        products: dict[str, dict[str, Any]] = {}
        queries: list[QueryRecord] = []
        for delivery in deliveries:
            request = delivery.message
            kind = request.WhichOneof("kind")
            if kind == "product_changed":
                problem = _products_problem(request.product_changed.products)
                if problem:
                    rejected.append(bus.Rejection(delivery, problem))
                    continue
                # The newest text of a product within the batch wins.
                products.update(
                    {p.product_id: product_row(p) for p in request.product_changed.products}
                )
            elif kind == "new_query":
                text = request.new_query.query.strip()
                if not text:
                    rejected.append(bus.Rejection(delivery, "new_query.query: must not be empty"))
                    continue
                queries.append(
                    QueryRecord(request.new_query.query_id or query_id_for(text), text, RELABEL)
                )
            elif kind is None:
                rejected.append(bus.Rejection(delivery, "kind: no request kind is set"))
        emitted: list[tuple[QueryRecord, list[Candidate]]] = []
        if products:
            emitted += self.engine.products_changed(list(products.values()))
        if queries:
            emitted += self.engine.new_queries(queries)
        for query, candidates in emitted:
            if candidates:
                index = self.engine.require_index()
                batch = candidate_batch(index, query, candidates, index.version)
                self.publisher.publish(CANDIDATES, query.query_id, batch)
        return rejected


def _products_problem(products: Sequence[common_pb2.Product]) -> str:
    if not products:
        return "product_changed.products: must not be empty"
    try:
        validate_products(products, "product_changed.products")
    except InvalidProduct as error:
        return str(error)
    return ""


class CandidateGenerationServicer(candidate_generation_pb2_grpc.CandidateGenerationServicer):
    def __init__(self, engine: CandidateEngine) -> None:
        self.engine = engine

    async def Generate(self, request, context):
        query = request.query.strip()
        require(bool(query), "query", "must not be empty")
        require(0 <= request.k <= MAX_K, "k", f"must be in 0..{MAX_K}, got {request.k}")
        check_deadline(context)
        index = self.engine.require_index()
        k = request.k or self.engine.settings.default_k
        hits = await asyncio.to_thread(index.search, query, k)
        products = index.products_at([h.row for h in hits])
        return candidate_generation_pb2.GenerateResponse(
            query_id=request.query_id or query_id_for(query),
            query=query,
            candidates=[
                candidate_generation_pb2.ScoredCandidate(
                    product=product_message(p), retrieval_score=h.score, rank=h.rank, stratum=TOP
                )
                for h, p in zip(hits, products, strict=True)
            ],
            index_version=index.version,
        )

    async def GenerateBatch(self, request, context):
        require_count(
            len(request.queries),
            self.engine.settings.max_batch_queries,
            "queries",
            "RELKD_CANDIDATE_MAX_BATCH_QUERIES",
        )
        for i, text in enumerate(request.queries):
            require(bool(text.strip()), f"queries[{i}]", "must not be empty")
        require_unique([q.strip() for q in request.queries], lambda i: f"queries[{i}]")
        per_query = request.per_query
        require(1 <= per_query <= MAX_K, "per_query", f"must be in 1..{MAX_K}, got {per_query}")
        index = self.engine.require_index()
        sampler = self.engine.sampler(per_query)
        for text in request.queries:
            check_deadline(context)
            query = text.strip()
            query_id = query_id_for(query)
            [candidates] = await asyncio.to_thread(sampler.sample_queries, [query_id], [query])
            products = index.products_at([c.row for c in candidates])
            yield candidate_generation_pb2.GenerateResponse(
                query_id=query_id,
                query=query,
                candidates=[
                    candidate_generation_pb2.ScoredCandidate(
                        product=product_message(p),
                        retrieval_score=c.score,
                        rank=c.rank,
                        stratum=c.stratum,
                    )
                    for c, p in zip(candidates, products, strict=True)
                ],
                index_version=index.version,
            )


def build_server(
    engine: CandidateEngine, settings: Settings, port: int | None = None
) -> GrpcServer:
    """The gRPC server with the CandidateGeneration service, health and reflection."""
    return GrpcServer.from_settings(
        [
            ServiceBinding(
                SERVICE_NAME,
                CandidateGenerationServicer(engine),
                candidate_generation_pb2_grpc.add_CandidateGenerationServicer_to_server,
            )
        ],
        settings,
        settings.candidate_generation_port if port is None else port,
    )


def relabel_consumer(engine: CandidateEngine, settings: Settings) -> bus.BackgroundConsumer:
    """The relabel-request consumer group, to run in the background (not started yet)."""
    publisher = bus.Publisher(settings)
    loop = bus.ConsumerLoop(
        settings,
        RELABEL_REQUESTS,
        engine.settings.relabel_group,
        RelabelHandler(engine, publisher),
        publisher,
    )
    return bus.BackgroundConsumer(loop, publisher, "relabel-consumer")


async def serve(settings: Settings) -> None:
    """Runs the gRPC service and, with Kafka configured, the relabel consumer, until a signal."""
    engine = CandidateEngine.from_settings(CandidateSettings())
    server = build_server(engine, settings)
    metrics.start_metrics_server(settings.metrics_port, settings.grpc_host)
    consumers: list[bus.BackgroundConsumer] = []
    if settings.kafka_bootstrap:
        consumers.append(relabel_consumer(engine, settings))
    else:
        log.warning("relabel consumer not started: RELKD_KAFKA_BOOTSTRAP is empty")
    await server.serve_until_signal(background=consumers)
