"""`relkd up` killed (SIGKILL) or stopped before it is SERVING leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ops.stack import SERVICES
from services.core.broker import free_port


def _start_up(tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "RELKD_KAFKA_BROKER": "tansu", "RELKD_DATA_DIR": str(tmp_path)}
    env.pop("RELKD_KAFKA_BOOTSTRAP", None)
    for spec in SERVICES.values():
        env[f"RELKD_{spec.port_setting.upper()}"] = str(free_port())
    return subprocess.Popen(
        [sys.executable, "-m", "ops", "up", "--timeout", "120"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_sigkilled_supervisor_leaves_no_orphans(tmp_path: Path) -> None:
    up = _start_up(tmp_path)
    try:
        deadline = time.monotonic() + 150
        while not (line := up.stdout.readline()).startswith("all SERVING"):
            assert line and time.monotonic() < deadline, "relkd up did not come up"
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 1 + len(SERVICES)  # the broker and every service
    finally:
        os.kill(up.pid, signal.SIGKILL)
        up.wait()
    # Each child got SIGTERM from the kernel when its parent died, and drains.
    assert not _gone(children, 30), "orphans left behind"


def test_sigterm_before_serving_stops_everything_started(tmp_path: Path) -> None:
    up = _start_up(tmp_path)
    parent = psutil.Process(up.pid)
    deadline = time.monotonic() + 60
    while not parent.children():  # the broker has started, the services may not have
        assert up.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    children = parent.children(recursive=True)
    os.kill(up.pid, signal.SIGTERM)
    assert up.wait(60) == 0
    children += [c for c in children if c.is_running()]
    assert not _gone(children, 30), "processes left behind"
