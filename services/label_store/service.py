"""The label store service: consumes labels and product changes, cuts snapshots.

Two consumer groups feed the store directory (``RELKD_LABEL_STORE_DIR``):

* ``<group>`` reads ``relevance.labels.v1``: every valid label becomes a row keyed by
  (query, product, teacher version); an invalid one goes to ``relevance.dlq.v1``;
* ``<group>-products`` reads ``relevance.relabel-requests.v1`` and keeps the products of
  ``product_changed`` requests (the other kinds are candidate generation's work).

A snapshot is cut when enough rows arrived (``snapshot_min_rows``) or the oldest
pending row is old enough (``snapshot_max_age_s``), and on demand with
``relkd labels snapshot``. The gRPC server carries health and reflection only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from prometheus_client import Counter, Gauge

from contracts.topics import LABELS, RELABEL_REQUESTS
from services.core import bus, metrics
from services.core.grpc_server import GrpcServer
from services.core.settings import Settings
from services.label_store.settings import LabelStoreSettings
from services.label_store.writer import (
    LabelsHandler,
    ProductChangesHandler,
    cut_snapshot,
    pending,
    remove_crash_leftovers,
)

log = logging.getLogger(__name__)

PENDING_ROWS = Gauge(
    "relkd_label_store_pending_rows",
    "Label and product rows stored but not yet in a snapshot.",
    ["table"],
)
SNAPSHOT_ROWS = Gauge(
    "relkd_label_store_snapshot_rows",
    "Rows of the newest snapshot: labels (pair x teacher version), teacher_labels, products.",
    ["table"],
)
SNAPSHOTS = Counter(
    "relkd_label_store_snapshots_total", "Snapshots cut by the service, by trigger.", ["reason"]
)


def snapshot_due(store_dir: Path, own: LabelStoreSettings) -> str:
    """Why a snapshot should be cut now (``"rows"``, ``"age"``), or empty if not yet."""
    waiting = pending(store_dir)
    PENDING_ROWS.labels("labels").set(waiting.labels)
    PENDING_ROWS.labels("products").set(waiting.products)
    if waiting.rows >= own.snapshot_min_rows:
        return "rows"
    if waiting.shards and waiting.oldest_age_s >= own.snapshot_max_age_s:
        return "age"
    return ""


class LabelStoreWorkers:
    """The two background consumers and the snapshot ticker."""

    def __init__(self, settings: Settings, own: LabelStoreSettings) -> None:
        self.own = own
        self.store_dir = own.dir
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if removed := remove_crash_leftovers(self.store_dir):
            log.warning("removed temp files a killed writer left", extra={"files": removed})
        # One publisher (for dead letters) per consumer: each consumer closes its own.
        labels_publisher, products_publisher = bus.Publisher(settings), bus.Publisher(settings)
        self.consumers = [
            bus.BackgroundConsumer(
                bus.ConsumerLoop(
                    settings, LABELS, own.group, LabelsHandler(self.store_dir), labels_publisher
                ),
                labels_publisher,
                "label-consumer",
            ),
            bus.BackgroundConsumer(
                bus.ConsumerLoop(
                    settings,
                    RELABEL_REQUESTS,
                    f"{own.group}-products",
                    ProductChangesHandler(self.store_dir),
                    products_publisher,
                ),
                products_publisher,
                "product-consumer",
            ),
        ]
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="snapshot-ticker", daemon=True)

    def start(self) -> None:
        """Consumers and ticker, outside a gRPC server (which starts the consumers itself)."""
        for consumer in self.consumers:
            consumer.start()
        self.start_ticker()

    def stop(self) -> None:
        """Lets each consumer finish and commit its batch, then stops the ticker."""
        for consumer in self.consumers:
            consumer.stop()
        self.stop_ticker()

    def start_ticker(self) -> None:
        self._ticker.start()

    def stop_ticker(self) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()

    def cut(self, reason: str) -> None:
        snapshot = cut_snapshot(self.store_dir, reason)
        if snapshot is None:
            return
        SNAPSHOTS.labels(reason).inc()
        for table, rows in snapshot.counts.items():
            SNAPSHOT_ROWS.labels(table).set(rows)
        log.info(
            "snapshot cut", extra={"snapshot": snapshot.id, "reason": reason, **snapshot.counts}
        )

    def _tick(self) -> None:
        while not self._stop.wait(self.own.check_interval_s):
            try:
                reason = snapshot_due(self.store_dir, self.own)
                if reason:
                    self.cut(reason)
            except Exception:
                # A failed cut leaves the incoming shards in place; the next tick retries.
                log.exception("snapshot cut failed; retrying at the next check")


async def serve(settings: Settings) -> None:
    """Runs the health endpoint and, with a Kafka bootstrap, the store's consumers; a
    consumer that dies stops the process non-zero (its supervisor restarts it)."""
    own = LabelStoreSettings()
    server = GrpcServer.from_settings([], settings, settings.label_store_port)
    metrics.start_metrics_server(settings.metrics_port, settings.grpc_host)
    if not settings.kafka_bootstrap:
        log.warning("label store consumers not started: RELKD_KAFKA_BOOTSTRAP is empty")
        await server.serve_until_signal()
        return
    workers = LabelStoreWorkers(settings, own)
    workers.start_ticker()
    log.info("label store consuming", extra={"store": str(own.dir), "group": own.group})

    async def stop_ticker() -> None:
        await asyncio.to_thread(workers.stop_ticker)

    await server.serve_until_signal(on_stop=stop_ticker, background=workers.consumers)
