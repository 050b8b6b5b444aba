"""Services as real `relkd serve` processes on free loopback ports, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from ops.stack import SERVICES, health_status
from services.core.settings import Settings


def start_service(
    name: str,
    port: int,
    env: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> subprocess.Popen[bytes]:
    """Starts service `name` on `port` without a model (unless `env` names one) and waits
    until it reports SERVING; `settings` secure the health probe's channel."""
    full_env = {**os.environ, f"RELKD_{SERVICES[name].port_setting.upper()}": str(port)}
    full_env.pop("RELKD_TEACHER_CHECKPOINT", None)
    full_env.pop("RELKD_STUDENT_BACKEND", None)
    full_env.update(env or {})
    # Logs go to a file, never to a pipe: a pipe nobody drains fills up (64 KiB) and then
    # blocks the service in its next log write, which a client sees as a hung server.
    with tempfile.NamedTemporaryFile(prefix=f"relkd-{name}-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops", "serve", name],
            env=full_env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 60
    address = f"127.0.0.1:{port}"
    while health_status(address, SERVICES[name].grpc_service, settings=settings) != "SERVING":
        if process.poll() is not None:
            raise AssertionError(Path(log.name).read_text(errors="replace")[-4000:])
        if time.monotonic() > deadline:
            stop_service(process)
            raise AssertionError(f"{name} not SERVING in 60 s")
        time.sleep(0.1)
    return process


def stop_service(process: subprocess.Popen[bytes]) -> int:
    """SIGTERMs the service's process group; returns its exit status."""
    os.killpg(process.pid, signal.SIGTERM)
    return process.wait(15)
