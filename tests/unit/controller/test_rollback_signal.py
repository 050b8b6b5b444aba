"""The rollback signal: the disagreement monitor's rate gauge, read by the controller
from a real Prometheus endpoint."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import start_http_server

from ops.loop.cli import scrape_gauge
from services.disagreement_monitor.service import DISAGREEMENT_RATE, disagreement_rate


def test_rate_is_the_share_of_gaps_at_least_min_gap() -> None:
    assert disagreement_rate([0.1, 0.5, 0.9, 2.0], min_gap=0.5) == pytest.approx(0.75)
    assert disagreement_rate([], min_gap=0.5) == 0.0


def test_controller_reads_the_monitors_gauge_over_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        DISAGREEMENT_RATE.set(disagreement_rate([0.1, 1.0, 1.5], min_gap=0.5))
        url = f"http://127.0.0.1:{port}/metrics"
        assert scrape_gauge(url, "relkd_monitor_disagreement_rate") == pytest.approx(2 / 3)
        assert scrape_gauge(url, "relkd_no_such_metric") is None
    finally:
        server.shutdown()
        thread.join(timeout=5)
