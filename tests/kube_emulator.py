"""Fixtures: the offline-check settings and a Kubernetes API emulator (kmock) on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import kmock
import pytest
from kubernetes import client

from ops.jobs.settings import K8sSettings


@pytest.fixture(scope="session")
def k8s_settings() -> K8sSettings:
    settings = K8sSettings()
    if not (settings.schemas_dir / "crds").is_dir():
        pytest.skip(
            f"no schemas in {settings.schemas_dir}: provide shared/schemas beside the repo "
            "or set RELKD_SCHEMAS_DIR"
        )
    return settings


class Emulator:
    """kmock's KubernetesEmulator served on 127.0.0.1 from a background event loop, so
    that the synchronous kubernetes client can call it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.handler: kmock.KubernetesEmulator | None = None
        self.url = ""
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),))

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
            self.handler = handler
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Emulator:
        self._thread.start()
        assert self._ready.wait(30), "kmock did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def api_client(self) -> client.ApiClient:
        return client.ApiClient(client.Configuration(host=self.url))

    def custom_objects(self) -> client.CustomObjectsApi:
        """A client of the emulator that does not go through the code under test."""
        return client.CustomObjectsApi(self.api_client())


@pytest.fixture()
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running
