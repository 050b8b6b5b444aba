"""Candidate generation service: `relevance.v1.CandidateGeneration` and the relabel consumer.

* ``Generate(query, k)``: the fused top-k of the catalog index, for ad-hoc use.
* ``GenerateBatch(queries, per_query)``: spectrum-sampled candidates per query.
* ``UpsertProducts(products)``: publishes them as a ``product_changed`` request.
* A consumer group on ``relevance.relabel-requests.v1``:

  - ``ProductChanged``: the products are upserted into the index (which is saved
    again), then candidates are emitted for (a) the known queries closest to each
    changed product by embedding, carrying the changed products they matched, and
    (b) one synthetic query written from each changed product, with a full
    spectrum sample that includes the product;
  - ``NewQuery``: the query joins the known pool and gets a spectrum sample;
  - ``TeacherChanged``: the pairs the label store holds under other teacher versions
    join the relabel backlog (``requeue.py``), which re-publishes them as candidates
    under a pairs-per-hour budget, most served and most borderline first;
  - ``Disagreement``: the disputed pair is relabeled, in one batch with the catalog's
    products nearest the disputed one (fresh candidates where the student is wrong);
  - no kind (empty, or one this version does not know): dead-lettered with the reason.

  The label store consumes the same ``product_changed`` requests for product text.
* A consumer group on ``relevance.served.v1`` counts served pairs: the backlog's
  first priority.
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
from contracts.topics import CANDIDATES, RELABEL_REQUESTS, SERVED
from services.candidate_generation.batch import candidate_batch
from services.candidate_generation.index import CatalogIndex, Encoder, MiniLMEncoder
from services.candidate_generation.queries import (
    DISAGREEMENT,
    RELABEL,
    QueryRecord,
    query_id_for,
    read_query_log,
    simulator_queries,
    synthetic_query,
)
from services.candidate_generation.requeue import (
    BACKLOG_FILE,
    LabelSource,
    LabelStoreLabels,
    RelabelBacklog,
    RequeueDrain,
)
from services.candidate_generation.sampling import TOP, Candidate, SamplingConfig, SpectrumSampler
from services.candidate_generation.settings import CandidateSettings
from services.core import bus, metrics
from services.core.grpc_server import (
    FailedPrecondition,
    GrpcServer,
    InvalidArgument,
    ServiceBinding,
    check_deadline,
    require,
    require_count,
    require_unique,
)
from services.core.settings import Settings
from services.label_store.settings import LabelStoreSettings
from services.label_store.store import LabelStore

log = logging.getLogger(__name__)

SERVICE_NAME = "relevance.v1.CandidateGeneration"
MAX_K = 1000
PRODUCER = "candidate-generation"
# Candidate.stratum of the products nearest a disputed one.
NEIGHBOUR = "neighbour"


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

    def disputed(self, pairs: Sequence[DisputedPair]) -> list[tuple[QueryRecord, list[Candidate]]]:
        """Each disputed product with the catalog's products nearest it, for its query."""
        self.add_known_queries([p.query for p in pairs])
        index = self.require_index()
        out = []
        for pair in pairs:
            row = index.row_of(pair.product_id)
            similar = index.similar_rows(row, self.settings.per_query - 1)
            candidates = [Candidate(pair.product_id, row, 0.0, 0, DISAGREEMENT)]
            candidates += [
                Candidate(pid, r, score, rank, NEIGHBOUR)
                for rank, ((r, score), pid) in enumerate(
                    zip(similar, index.product_ids_at([r for r, _ in similar]), strict=True),
                    start=1,
                )
            ]
            out.append((pair.query, candidates))
        return out


def load_query_pool(path: Path) -> list[QueryRecord]:
    """Known queries from a dataset directory (every split) or a query log file."""
    if path.is_dir():
        return simulator_queries(path, Split.ALL)
    return read_query_log(path)


@dataclass(frozen=True)
class DisputedPair:
    """A disagreement request: the query and the product student and teacher dispute."""

    query: QueryRecord
    product_id: str


class RelabelHandler:
    """Consumer-group handler for relabel requests (see the module docstring)."""

    def __init__(
        self,
        engine: CandidateEngine,
        publisher: bus.Publisher,
        requeue: RequeueDrain | None = None,
        labels: LabelSource | None = None,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.requeue = requeue
        self.labels = labels

    def __call__(
        self, deliveries: Sequence[bus.Delivery[topics_pb2.RelabelRequest]]
    ) -> list[bus.Rejection]:
        rejected: list[bus.Rejection] = []
        products: dict[str, dict[str, Any]] = {}
        queries: list[QueryRecord] = []
        disputed: list[DisputedPair] = []
        teachers: list[str] = []
        for delivery in deliveries:
            request = delivery.message
            kind = request.WhichOneof("kind")
            problem = ""
            if kind == "product_changed":
                problem = _products_problem(request.product_changed.products)
                if not problem:
                    # The newest text of a product within the batch wins.
                    products.update(
                        {p.product_id: product_row(p) for p in request.product_changed.products}
                    )
            elif kind == "new_query":
                text = request.new_query.query.strip()
                if not text:
                    problem = "new_query.query: must not be empty"
                else:
                    queries.append(
                        QueryRecord(request.new_query.query_id or query_id_for(text), text, RELABEL)
                    )
            elif kind == "teacher_changed":
                problem = self._teacher_problem(request.teacher_changed)
                if not problem:
                    teachers.append(request.teacher_changed.teacher.version)
            elif kind == "disagreement":
                problem = self._disagreement_problem(request.disagreement)
                if not problem:
                    d = request.disagreement
                    text = d.query.strip()
                    query = QueryRecord(d.query_id or query_id_for(text), text, DISAGREEMENT)
                    disputed.append(DisputedPair(query, d.product_id))
            else:
                # Unset, or a kind added to the proto after this service was built.
                problem = "kind: no request kind is set (or one this service does not know)"
            if problem:
                rejected.append(bus.Rejection(delivery, problem))
        emitted: list[tuple[QueryRecord, list[Candidate]]] = []
        # Products first: a disagreement or a re-queued pair in the same batch may be about them.
        if products:
            emitted += self.engine.products_changed(list(products.values()))
        if queries:
            emitted += self.engine.new_queries(queries)
        if disputed:
            emitted += self.engine.disputed(disputed)
        for query, candidates in emitted:
            if candidates:
                index = self.engine.require_index()
                batch = candidate_batch(index, query, candidates, index.version)
                self.publisher.publish(CANDIDATES, query.query_id, batch)
        if teachers:
            # _teacher_problem rejected every teacher_changed request when these are unset.
            assert self.labels is not None and self.requeue is not None
            for version in dict.fromkeys(teachers):
                added = self.requeue.backlog.enqueue(version, self.labels.stale_pairs(version))
                log.info("teacher changed", extra={"teacher_version": version, "queued": added})
            self.requeue.drain_once()
        return rejected

    def _teacher_problem(self, request: topics_pb2.TeacherChanged) -> str:
        if not request.teacher.version:
            return "teacher_changed.teacher.version: must not be empty"
        if self.labels is None or self.requeue is None:
            return "teacher_changed: this consumer has no label store to read labeled pairs from"
        return ""

    def _disagreement_problem(self, request: topics_pb2.Disagreement) -> str:
        if not request.query.strip():
            return "disagreement.query: must not be empty"
        if not request.product_id:
            return "disagreement.product_id: must not be empty"
        if request.product_id not in self.engine.require_index():
            return f"disagreement.product_id: {request.product_id!r} is not in the catalog index"
        return ""


class ServedCounter:
    """Consumer-group handler for served samples: counts served pairs for the backlog."""

    def __init__(self, backlog: RelabelBacklog) -> None:
        self.backlog = backlog

    def __call__(
        self, deliveries: Sequence[bus.Delivery[topics_pb2.ServedSample]]
    ) -> list[bus.Rejection]:
        rejected: list[bus.Rejection] = []
        pairs: list[tuple[str, str]] = []
        for delivery in deliveries:
            sample = delivery.message
            if not sample.query_id:
                rejected.append(bus.Rejection(delivery, "query_id: must not be empty"))
                continue
            pairs += [(sample.query_id, p.product_id) for p in sample.products]
        self.backlog.record_served(pairs)
        return rejected


def product_changed_request(
    products: Sequence[common_pb2.Product], producer: str
) -> topics_pb2.RelabelRequest:
    return topics_pb2.RelabelRequest(
        meta=bus.event_meta(producer),
        product_changed=topics_pb2.ProductChanged(products=products),
    )


def publish_relabel_request(publisher: bus.Publisher, request: topics_pb2.RelabelRequest) -> None:
    """Publishes one relabel request, keyed by its event id, and waits for the broker's ack."""
    publisher.publish(RELABEL_REQUESTS, request.meta.event_id, request)
    publisher.flush()


def _products_problem(products: Sequence[common_pb2.Product]) -> str:
    if not products:
        return "product_changed.products: must not be empty"
    try:
        validate_products(products, "product_changed.products")
    except InvalidProduct as error:
        return str(error)
    return ""


class CandidateGenerationServicer(candidate_generation_pb2_grpc.CandidateGenerationServicer):
    def __init__(self, engine: CandidateEngine, publisher: bus.Publisher | None = None) -> None:
        self.engine = engine
        self.publisher = publisher

    async def UpsertProducts(self, request, context):
        require_count(
            len(request.products),
            self.engine.settings.upsert_max_products,
            "products",
            "RELKD_CANDIDATE_UPSERT_MAX_PRODUCTS",
        )
        try:
            validate_products(request.products, unique_ids=True)
        except InvalidProduct as error:
            raise InvalidArgument(error.field, error.problem) from None
        if self.publisher is None:
            raise FailedPrecondition("no Kafka to publish to (set RELKD_KAFKA_BOOTSTRAP)")
        check_deadline(context)
        event = product_changed_request(request.products, PRODUCER)
        await asyncio.to_thread(publish_relabel_request, self.publisher, event)
        return candidate_generation_pb2.UpsertProductsResponse(
            published=len(request.products), event_id=event.meta.event_id
        )

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
    engine: CandidateEngine,
    settings: Settings,
    port: int | None = None,
    publisher: bus.Publisher | None = None,
) -> GrpcServer:
    """The gRPC server with the CandidateGeneration service, health and reflection."""
    return GrpcServer.from_settings(
        [
            ServiceBinding(
                SERVICE_NAME,
                CandidateGenerationServicer(engine, publisher),
                candidate_generation_pb2_grpc.add_CandidateGenerationServicer_to_server,
            )
        ],
        settings,
        settings.candidate_generation_port if port is None else port,
    )


class RelabelWorkers:
    """The relabel-request and served-sample consumer groups and the backlog drain.

    `serve` runs `consumers` as the server's background consumers and the drain
    thread beside them; :meth:`start` / :meth:`stop` run all of it for embedding.
    """

    def __init__(self, engine: CandidateEngine, settings: Settings) -> None:
        own = engine.settings
        self.backlog = RelabelBacklog(own.state_dir / BACKLOG_FILE, own.requeue_pairs_per_hour)
        # The drain publishes with the relabel consumer's publisher: the handler drains
        # right after queueing a teacher change, and both flush before committing.
        publisher = bus.Publisher(settings)
        self.drain = RequeueDrain(self.backlog, engine.require_index, publisher)
        self.interval_s = own.requeue_interval_s
        labels = LabelStoreLabels(LabelStore(LabelStoreSettings().dir))
        relabel = bus.ConsumerLoop(
            settings,
            RELABEL_REQUESTS,
            own.relabel_group,
            RelabelHandler(engine, publisher, self.drain, labels),
            publisher,
        )
        served_publisher = bus.Publisher(settings)
        served = bus.ConsumerLoop(
            settings, SERVED, own.served_group, ServedCounter(self.backlog), served_publisher
        )
        self.consumers = [
            bus.BackgroundConsumer(relabel, publisher, "relabel-consumer"),
            bus.BackgroundConsumer(served, served_publisher, "served-counter"),
        ]
        self._stop_drain = threading.Event()
        self._drainer: threading.Thread | None = None

    def start_drain(self) -> None:
        self._drainer = threading.Thread(
            target=self.drain.run,
            args=(self._stop_drain, self.interval_s),
            name="relabel-backlog-drain",
            daemon=True,
        )
        self._drainer.start()

    def stop_drain(self, timeout_s: float | None = None) -> None:
        """Stops the drain thread; before the consumers, whose publisher it uses."""
        self._stop_drain.set()
        if self._drainer is not None:
            self._drainer.join(timeout_s)

    def start(self) -> None:
        for consumer in self.consumers:
            consumer.start()
        self.start_drain()

    def stop(self, timeout_s: float | None = None) -> None:
        self.stop_drain(timeout_s)
        for consumer in self.consumers:
            consumer.stop(timeout_s)
        self.backlog.close()


async def serve(settings: Settings) -> None:
    """Runs the gRPC service and, with Kafka configured, the relabel workers, until a signal."""
    engine = CandidateEngine.from_settings(CandidateSettings())
    metrics.start_metrics_server(settings.metrics_port, settings.grpc_host)
    workers: RelabelWorkers | None = None
    upserts: bus.Publisher | None = None
    if settings.kafka_bootstrap:
        workers = RelabelWorkers(engine, settings)
        upserts = bus.Publisher(settings)
    else:
        log.warning("relabel consumers not started: RELKD_KAFKA_BOOTSTRAP is empty")
    server = build_server(engine, settings, publisher=upserts)

    async def stop_drain() -> None:
        if workers is not None:
            await asyncio.to_thread(workers.stop_drain)

    if workers is not None:
        workers.start_drain()
    try:
        await server.serve_until_signal(
            on_stop=stop_drain, background=workers.consumers if workers else ()
        )
    finally:
        # After the server stopped: in-flight UpsertProducts calls still publish.
        if upserts is not None:
            upserts.close()
        if workers is not None:
            workers.backlog.close()
