"""Fixtures: exported tiny students (from tests/student_fixtures.py) and the real gRPC
service on a free port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from relevance.v1 import student_inference_pb2_grpc

from services.core.grpc_server import GrpcServer, ServiceBinding
from services.core.settings import Settings
from services.student_inference.served import ServedSampler
from services.student_inference.service import (
    SERVICE_NAME,
    ScoringBackend,
    StudentInferenceServicer,
    StudentInferenceSettings,
    load_backend,
    served_sampler,
)
from training.export.exporter import export_student


@pytest.fixture(scope="session")
def cross_encoder_exports(
    make_cross_encoder: Callable[[int], Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path]]:
    """Version -> (checkpoint, export dir) of two differently seeded cross-encoders."""
    exports = {}
    for version in ("1", "2"):
        checkpoint = make_cross_encoder(int(version))
        out = tmp_path_factory.mktemp(f"ce-export-{version}")
        export_student(checkpoint, out, int8=False)
        exports[version] = (checkpoint, out)
    return exports


StartService = Callable[[Mapping[str, str]], str]


@pytest.fixture
def start_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[StartService]:
    """Serves StudentInference in-process on a free port with the backend that the
    given environment selects (as `relkd up` would set it); yields the address."""
    started: list[
        tuple[asyncio.AbstractEventLoop, GrpcServer, ScoringBackend | None, ServedSampler | None]
    ] = []

    def start(env: Mapping[str, str]) -> str:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        own = StudentInferenceSettings()
        served = served_sampler(Settings(), own)
        servicer = StudentInferenceServicer(load_backend(own), own, served)
        binding = ServiceBinding(
            SERVICE_NAME,
            servicer,
            student_inference_pb2_grpc.add_StudentInferenceServicer_to_server,
        )

        async def serve() -> GrpcServer:
            # grpc.aio objects belong to the loop they are created on.
            server = GrpcServer([binding], "127.0.0.1", 0)
            await server.start()
            return server

        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        server = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
        started.append((loop, server, servicer.backend, served))
        return server.address

    yield start
    for loop, server, backend, served in started:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        if backend is not None:
            asyncio.run_coroutine_threadsafe(backend.close(), loop).result(10)
        if served is not None:
            served.close()
        loop.call_soon_threadsafe(loop.stop)
