"""`relkd up`: broker plus the services SERVING, listed by reflection, and a
clean stop on SIGTERM that leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from ops.stack import SERVICES, health_status, reflected_services
from services.core.broker import free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("broker", ["tansu", "noida"])
def test_up_serves_everything_and_stops_cleanly(broker: str, tmp_path) -> None:
    ports = {name: free_port() for name in SERVICES}
    env = {**os.environ, "RELKD_KAFKA_BROKER": broker, "RELKD_DATA_DIR": str(tmp_path)}
    env.pop("RELKD_KAFKA_BOOTSTRAP", None)
    for name, port in ports.items():
        env[f"RELKD_{SERVICES[name].port_setting.upper()}"] = str(port)
    up = subprocess.Popen(
        [sys.executable, "-m", "ops", "up", "--timeout", "90"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            assert line, f"relkd up exited early: {''.join(lines)}"
            lines.append(line)
            if line.startswith("all SERVING"):
                break
        assert lines[-1].startswith("all SERVING"), "".join(lines)
        # Nothing trained under the data dir: it says which command makes each model.
        assert any(
            line.startswith("teacher") and "relkd teacher train" in line for line in lines
        ), "".join(lines)
        assert any(
            line.startswith("student") and "relkd student triton-repo" in line for line in lines
        ), "".join(lines)
        descendants = psutil.Process(up.pid).children(recursive=True)
        assert len(descendants) >= len(SERVICES) + 1  # the broker and the services

        for name, port in ports.items():
            address = f"127.0.0.1:{port}"
            assert f"{name:<20}{address}  SERVING" in "".join(lines)
            assert health_status(address) == "SERVING"
            assert health_status(address, SERVICES[name].grpc_service) == "SERVING"
            # The label store serves health only (it is read through its snapshots).
            if SERVICES[name].grpc_service:
                assert SERVICES[name].grpc_service in reflected_services(address)
    finally:
        os.kill(up.pid, signal.SIGTERM)
        code = up.wait(60)
    assert code == 0
    assert not [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for port in ports.values():
        assert health_status(f"127.0.0.1:{port}", timeout_s=0.5) == "UNAVAILABLE"
