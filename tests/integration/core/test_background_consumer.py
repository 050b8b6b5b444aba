"""A service's background consumer that dies takes the server down with a non-zero
outcome (so `relkd up` or Kubernetes restarts the process); its batch stays uncommitted."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from relevance.v1 import topics_pb2

from contracts.topics import CANDIDATES
from ops.stack import health_status
from services.core import bus
from services.core.broker import free_port
from services.core.grpc_server import BackgroundFailure, GrpcServer
from services.core.settings import Settings

pytestmark = pytest.mark.integration


class HandlerBug(BaseException):
    """Escapes the loop's per-message isolation, as a bug in the loop itself would."""


def test_a_dead_consumer_stops_its_server_non_zero(settings: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    publisher = bus.Publisher(settings)
    publisher.publish(CANDIDATES, "k", topics_pb2.CandidateBatch(query_id=f"{run}-boom"))
    publisher.flush()
    publisher.close()

    def handler(deliveries):
        if any(d.message.query_id == f"{run}-boom" for d in deliveries):
            raise HandlerBug("consumer thread crashed")
        return []

    out = bus.Publisher(settings)
    loop = bus.ConsumerLoop(settings, CANDIDATES, f"dies-{run}", handler, out)
    consumer = bus.BackgroundConsumer(loop, out, "test-consumer")
    port = free_port()
    seen: list[str] = []

    async def main() -> None:
        server = GrpcServer([], "127.0.0.1", port)
        serving = asyncio.create_task(server.serve_until_signal(background=[consumer]))
        while not serving.done():
            seen.append(await asyncio.to_thread(health_status, f"127.0.0.1:{port}"))
            await asyncio.sleep(0.1)
        await serving

    with pytest.raises(BackgroundFailure, match="test-consumer died"):
        asyncio.run(asyncio.wait_for(main(), 60))
    assert "SERVING" in seen
    assert isinstance(consumer.error, HandlerBug) and not consumer.is_alive()
    assert health_status(f"127.0.0.1:{port}", timeout_s=0.5) == "UNAVAILABLE"
