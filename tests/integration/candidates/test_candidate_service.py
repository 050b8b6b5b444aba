"""Candidate generation against real processes: a broker (Tansu and noida-db), a gRPC
server on loopback, a simulated catalog and the real MiniLM encoder."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import torch
from google.protobuf.message import DecodeError
from kafka import KafkaConsumer
from relevance.v1 import (
    candidate_generation_pb2,
    candidate_generation_pb2_grpc,
    common_pb2,
    topics_pb2,
)

from contracts.topics import CANDIDATES, RELABEL_REQUESTS
from services.candidate_generation.batch import Ledger, run_batch
from services.candidate_generation.index import CatalogIndex, MiniLMEncoder
from services.candidate_generation.queries import simulator_queries
from services.candidate_generation.service import (
    CandidateEngine,
    RelabelWorkers,
    build_server,
)
from services.candidate_generation.settings import CandidateSettings
from services.core import bus
from services.core.broker import EmbeddedBroker, free_port
from services.core.settings import Settings
from training.data import storage
from training.data.simulator import simulate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate(
        tmp_path_factory.mktemp("sim"), num_products=120, num_queries=12, show_progress=False
    )


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    torch.set_num_threads(1)
    return MiniLMEncoder()


@pytest.fixture(scope="module")
def saved_index(
    dataset: Path, encoder: MiniLMEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("index")
    CatalogIndex.build(storage.read_table(dataset, "products"), encoder).save(path)
    return path


@pytest.fixture
def engine(
    saved_index: Path, dataset: Path, encoder: MiniLMEncoder, tmp_path: Path
) -> CandidateEngine:
    index_dir = tmp_path / "index"
    CatalogIndex.load(saved_index, encoder).save(index_dir)
    own = CandidateSettings(
        index_dir=index_dir,
        state_dir=tmp_path / "state",
        per_query=8,
        sample_depth=40,
        query_pool=dataset,
    )
    return CandidateEngine.from_settings(own, encoder)


def read_batches(
    broker: EmbeddedBroker,
    until: Callable[[list[tuple[str, topics_pb2.CandidateBatch]]], bool],
    timeout_s: float = 60.0,
) -> list[tuple[str, topics_pb2.CandidateBatch]]:
    """(key, batch) pairs on the candidates topic, polled until `until(batches)` holds."""
    consumer = KafkaConsumer(
        CANDIDATES.name,
        bootstrap_servers=broker.bootstrap,
        group_id=f"reader-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    batches: list[tuple[str, topics_pb2.CandidateBatch]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(batches) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    # The bus tests leave deliberate poison on this shared topic.
                    with contextlib.suppress(DecodeError):
                        batches.append((r.key.decode(), CANDIDATES.decode(r.value)))
    finally:
        consumer.close()
    return batches


def test_generate_rpcs_over_grpc(engine: CandidateEngine, settings: Settings) -> None:
    async def scenario() -> None:
        server = build_server(engine, settings, port=free_port())
        await server.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = candidate_generation_pb2_grpc.CandidateGenerationStub(channel)
                reply = await stub.Generate(
                    candidate_generation_pb2.GenerateRequest(query="sofa", k=15)
                )
                assert len(reply.candidates) == 15
                assert [c.rank for c in reply.candidates] == list(range(1, 16))
                assert reply.index_version == engine.index.version and reply.query_id
                assert all(c.product.product_id in engine.index for c in reply.candidates)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Generate(
                        candidate_generation_pb2.GenerateRequest(query="sofa", k=5000)
                    )
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert info.value.details().startswith("k:")
                request = candidate_generation_pb2.GenerateBatchRequest(
                    queries=["lamp", "rug"], per_query=6
                )
                replies = [r async for r in stub.GenerateBatch(request)]
                assert [r.query for r in replies] == ["lamp", "rug"]
                assert all(len(r.candidates) == 6 for r in replies)
                assert {c.stratum for r in replies for c in r.candidates} <= {
                    "top",
                    "stratified",
                    "random",
                }
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_batch_run_publishes_once_per_query_and_index_version(
    engine: CandidateEngine, settings: Settings, kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    # A fresh pool per test run: the session broker keeps earlier tests' batches.
    tag = uuid.uuid4().hex[:8]
    queries = [
        q.__class__(f"{tag}-{q.query_id}", q.query, q.source)
        for q in simulator_queries(engine.settings.query_pool)
    ]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    publisher = bus.Publisher(settings)
    try:
        first = run_batch(
            engine.index, engine.sampler(), queries, publisher, ledger, progress=False
        )
        again = run_batch(
            engine.index, engine.sampler(), queries, publisher, ledger, progress=False
        )
    finally:
        publisher.close()
    assert first.queries_published == len(queries) and first.pairs_published == 8 * len(queries)
    assert again.queries_published == 0 and again.queries_skipped == len(queries)
    ours = lambda batches: [(k, b) for k, b in batches if k.startswith(tag)]  # noqa: E731
    batches = ours(read_batches(kafka_broker, lambda b: len(ours(b)) >= len(queries)))
    assert sorted(k for k, _ in batches) == sorted(q.query_id for q in queries)  # no republishing
    for key, batch in batches:
        assert batch.query_id == key and len(batch.products) == 8
        assert batch.source == "simulator" and batch.index_version == engine.index.version


def test_relabel_requests_of_both_kinds_emit_candidates(
    engine: CandidateEngine, settings: Settings, kafka_broker: EmbeddedBroker
) -> None:
    tag = uuid.uuid4().hex[:8]
    old_version = engine.index.version
    product = common_pb2.Product(
        product_id=f"new-{tag}",
        title="Velvet chesterfield sofa",
        product_type="sofa",
        brand="Brandnew",
        attributes={"color": "emerald"},
    )
    publisher = bus.Publisher(settings)
    workers = RelabelWorkers(engine, settings)
    workers.start()
    try:
        requests = [
            topics_pb2.RelabelRequest(
                product_changed=topics_pb2.ProductChanged(products=[product])
            ),
            topics_pb2.RelabelRequest(
                new_query=topics_pb2.NewQuery(query_id=f"q-{tag}", query="emerald velvet sofa")
            ),
        ]
        for request in requests:
            request.meta.CopyFrom(bus.event_meta("test"))
            publisher.publish(RELABEL_REQUESTS, tag, request)
        publisher.flush()

        def done(batches: list) -> bool:
            keys = {k for k, _ in batches}
            carrying = [
                b for _, b in batches if any(p.product_id == product.product_id for p in b.products)
            ]
            return f"q-{tag}" in keys and len(carrying) >= 2

        batches = read_batches(kafka_broker, done)
    finally:
        workers.stop(30)
        publisher.close()
    assert done(batches)
    by_key = dict(batches)
    new_query = by_key[f"q-{tag}"]
    assert new_query.source == "relabel" and len(new_query.products) == 8
    carrying = [
        b for _, b in batches if any(p.product_id == product.product_id for p in b.products)
    ]
    # The changed product reached known queries (closest by embedding) and its own synthetic one.
    assert {b.query_id for b in carrying} & {q.query_id for q in engine.pool.records}
    assert all(b.index_version != old_version for b in carrying)
    # The upserted index was saved: a restarted service sees the new product.
    reloaded = CatalogIndex.load(engine.settings.index_dir, engine.encoder)
    assert product.product_id in reloaded and reloaded.version == engine.index.version


def test_upsert_products_rpc_publishes_product_changed(
    engine: CandidateEngine, settings: Settings, read_topic
) -> None:
    tag = uuid.uuid4().hex[:8]
    products = [
        common_pb2.Product(product_id=f"{tag}-{i}", title=f"walnut desk {i}") for i in range(3)
    ]
    publisher = bus.Publisher(settings)

    async def scenario() -> candidate_generation_pb2.UpsertProductsResponse:
        server = build_server(engine, settings, port=free_port(), publisher=publisher)
        offline = build_server(engine, settings, port=free_port())
        await server.start()
        await offline.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = candidate_generation_pb2_grpc.CandidateGenerationStub(channel)
                reply = await stub.UpsertProducts(
                    candidate_generation_pb2.UpsertProductsRequest(products=products)
                )
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.UpsertProducts(
                        candidate_generation_pb2.UpsertProductsRequest(
                            products=[common_pb2.Product(product_id="x", title=" ")]
                        )
                    )
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert info.value.details().startswith("products[0].title:")
            async with grpc.aio.insecure_channel(offline.address) as channel:
                stub = candidate_generation_pb2_grpc.CandidateGenerationStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.UpsertProducts(
                        candidate_generation_pb2.UpsertProductsRequest(products=products)
                    )
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            return reply
        finally:
            await server.stop()
            await offline.stop()

    try:
        reply = asyncio.run(scenario())
    finally:
        publisher.close()
    assert reply.published == 3 and reply.event_id
    # Everything on the shared topic for a few seconds: other tests' requests are there too.
    requests = [
        m
        for m in read_topic(RELABEL_REQUESTS, expect=10**6, timeout_s=5)
        if m.meta.event_id == reply.event_id
    ]
    assert len(requests) == 1
    assert [p.product_id for p in requests[0].product_changed.products] == [
        p.product_id for p in products
    ]
