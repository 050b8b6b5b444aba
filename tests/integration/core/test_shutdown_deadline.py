"""A stop that hangs is cut off at the shutdown deadline: no process outlives its stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]

# A server whose on_stop hook never returns, as a handler stuck mid-batch would.
HANGING_SERVER = textwrap.dedent(
    """
    import asyncio

    from services.core.grpc_server import GrpcServer

    async def main() -> None:
        server = GrpcServer([], "127.0.0.1", 0, shutdown_deadline_s=1.0)

        async def hang() -> None:
            await asyncio.sleep(3600)

        print(server.address, flush=True)
        await server.serve_until_signal(on_stop=hang)

    asyncio.run(main())
    """
)


def test_a_stop_that_hangs_exits_at_the_deadline() -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'proto'}"}
    child = subprocess.Popen(
        [sys.executable, "-c", HANGING_SERVER], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout is not None
        address = child.stdout.readline().strip()
        # SERVING means the signal handlers are installed (they come first).
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        child.send_signal(signal.SIGTERM)
        # Without the deadline the hook would hold the process for an hour.
        assert child.wait(timeout=30) == 1
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
