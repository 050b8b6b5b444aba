"""Fixtures: a Kubernetes API emulator (kmock) on loopback and a kubeconfig pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client


@pytest.fixture()
def kubeconfig(emulator, tmp_path: Path) -> Iterator[Path]:
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
