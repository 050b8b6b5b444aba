"""Stopping student-inference releases its backend's connections (the Triton client)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence

import pytest
from relevance.v1 import common_pb2, student_inference_pb2

from services.core.settings import Settings
from services.student_inference import service
from services.student_inference.service import ScoreResult


class RecordingBackend:
    def __init__(self) -> None:
        self.closed = 0

    async def score(
        self,
        query: str,
        products: Sequence[student_inference_pb2.ScoreProduct],
        timeout_s: float | None,
    ) -> ScoreResult:
        return ScoreResult(scores=[0.0] * len(products), truncated=0)

    def model(self) -> common_pb2.ModelRef:
        return common_pb2.ModelRef(name="recording", version="1")

    async def close(self) -> None:
        self.closed += 1


def test_sigterm_stops_the_server_then_closes_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = RecordingBackend()
    monkeypatch.setattr(service, "load_backend", lambda own: backend)
    settings = Settings(grpc_host="127.0.0.1", student_inference_port=0, metrics_port=0)

    async def serve_then_terminate() -> None:
        default = signal.getsignal(signal.SIGTERM)
        serving = asyncio.create_task(service.serve(settings))
        # The server installs its SIGTERM handler once it is serving.
        while signal.getsignal(signal.SIGTERM) == default:
            assert not serving.done(), serving.exception()
            await asyncio.sleep(0.01)
        assert backend.closed == 0
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, 30)

    asyncio.run(serve_then_terminate())
    assert backend.closed == 1
