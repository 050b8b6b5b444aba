"""Prometheus metrics shared by every service.

Per RPC: request counts by status code and latency histograms. Per topic: messages
processed, failed (isolated or retried) and dead-lettered by each consumer group.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_REQUESTS = Counter("relkd_grpc_requests_total", "gRPC requests handled.", ["method", "code"])
RPC_LATENCY = Histogram(
    "relkd_grpc_request_seconds",
    "gRPC request latency.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGES = Counter(
    "relkd_kafka_messages_total",
    "Kafka messages consumed, by outcome (processed, dead_lettered).",
    ["topic", "group", "outcome"],
)
BATCH_FAILURES = Counter(
    "relkd_kafka_batch_failures_total",
    "Consumed batches whose processing raised and were retried message by message.",
    ["topic", "group"],
)
BATCH_RETRIES = Counter(
    "relkd_kafka_batch_retries_total",
    "Consumed batches that failed transiently (broker, Triton, out of memory) and were "
    "retried whole after a backoff, uncommitted.",
    ["topic", "group"],
)
CONSUMER_LAG = Gauge(
    "relkd_kafka_consumer_lag",
    "Messages waiting behind the last batch in its partitions (queue depth); NaN when "
    "the broker's end offsets are provably wrong (behind consumed records).",
    ["topic", "group"],
)
PUBLISHED = Counter(
    "relkd_kafka_published_total", "Messages published and acknowledged.", ["topic"]
)


def start_metrics_server(port: int, host: str) -> None:
    """Serves /metrics on `port`; port 0 means metrics are not exposed."""
    if port:
        start_http_server(port, addr=host)
