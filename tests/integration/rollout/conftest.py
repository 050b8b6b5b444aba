"""Fixtures: a Kubernetes API emulator (kmock) on loopback and a kubeconfig pointing at it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import kmock
import pytest
import yaml
from kubernetes import client

from services.jobs.settings import K8sSettings


@pytest.fixture(scope="session")
def k8s_settings() -> K8sSettings:
    settings = K8sSettings()
    if not (settings.schemas_dir / "crds" / "serving.kserve.io_inferenceservices.yaml").is_file():
        pytest.skip(
            f"no InferenceService CRD in {settings.schemas_dir}/crds: provide shared/schemas "
            "beside the repo or set RELKD_SCHEMAS_DIR"
        )
    return settings


class Emulator:
    """kmock's KubernetesEmulator served on 127.0.0.1 from a background event loop, so
    that the synchronous kubernetes client (inside KServeClient) can call it."""

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

    def custom_objects(self) -> client.CustomObjectsApi:
        """A client of the emulator that does not go through the code under test."""
        return client.CustomObjectsApi(client.ApiClient(client.Configuration(host=self.url)))


@pytest.fixture()
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


@pytest.fixture()
def kubeconfig(emulator: Emulator, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for the emulator; KServeClient loads it into the kubernetes client's
    process-wide default configuration, which is restored afterwards."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": emulator.url}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
                "current-context": "kmock",
            }
        )
    )
    default = client.Configuration.get_default_copy()
    yield path
    client.Configuration.set_default(default)
