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
    """The two consumer loops and the snapshot ticker, as background threads."""

    def __init__(self, settings: Settings, own: LabelStoreSettings) -> None:
        self.own = own
        self.store_dir = own.dir
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.publisher = bus.Publisher(settings)
        self.loops = [
            bus.ConsumerLoop(
                settings, LABELS, own.group, LabelsHandler(self.store_dir), self.publisher
            ),
            bus.ConsumerLoop(
                settings,
                RELABEL_REQUESTS,
                f"{own.group}-products",
                ProductChangesHandler(self.store_dir),
                self.publisher,
            ),
        ]
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=loop.run, name=f"consume-{loop.topic.name}", daemon=True)
            for loop in self.loops
        ] + [threading.Thread(target=self._tick, name="snapshot-ticker", daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

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

    def stop(self) -> None:
        """Lets each loop finish and commit its batch, then stops the ticker."""
        self._stop.set()
        for loop in self.loops:
            loop.stop()
        for thread in self.threads:
            thread.join()
        self.publisher.close()


async def serve(settings: Settings) -> None:
    """Runs the health endpoint and, with a Kafka bootstrap, the store's consumers."""
    own = LabelStoreSettings()
    server = GrpcServer([], settings.grpc_host, settings.label_store_port, settings.grpc_grace_s)
    metrics.start_metrics_server(settings.metrics_port, settings.grpc_host)
    workers: LabelStoreWorkers | None = None
    if settings.kafka_bootstrap:
        workers = LabelStoreWorkers(settings, own)
        workers.start()
        log.info("label store consuming", extra={"store": str(own.dir), "group": own.group})
    else:
        log.warning("label store consumers not started: RELKD_KAFKA_BOOTSTRAP is empty")

    async def drain() -> None:
        if workers is not None:
            await asyncio.to_thread(workers.stop)

    await server.serve_until_signal(on_stop=drain)
