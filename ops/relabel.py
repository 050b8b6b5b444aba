"""Producers of relabel requests an operator runs, and the relabel backlog's progress.

* ``relkd catalog upsert FILE``: products (JSON lines or Parquet, the products table's
  columns) published as ``product_changed`` requests;
* ``relkd teacher promote CHECKPOINT``: a ``teacher_changed`` request for the teacher
  the teacher-labeling service now serves;
* ``relkd relabel status``: the backlog of pairs queued for each teacher version.

docs/relabel-streams.md describes the topics and what consumes each request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from relevance.v1 import common_pb2, topics_pb2
from rich.console import Console
from rich.table import Table

from contracts.artifacts import read_teacher_spec
from contracts.products import product_message
from services.core.settings import get_settings

catalog_app = typer.Typer(
    help="Publish catalog changes to the relabel stream.", no_args_is_help=True
)
relabel_app = typer.Typer(help="The relabel streams' progress.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)
PRODUCER = "relkd-cli"


def _fail(message: str) -> NoReturn:
    errors.print(f"[red]{message}", highlight=False)
    raise typer.Exit(1)


def read_products(path: Path) -> list[dict[str, Any]]:
    """Product rows from a Parquet file or JSON lines; errors name the line and field."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        where = [f"{path}: row {i}" for i in range(len(rows))]
    else:
        rows, where = [], []
        with path.open() as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
                where.append(f"{path}:{number}")
    for row, place in zip(rows, where, strict=True):
        if not isinstance(row, dict):
            raise ValueError(f"{place}: expected a JSON object")
        for field in ("product_id", "title"):
            value = row.get(field)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{place}: {field}: must be a non-empty string")
    return rows


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _publisher() -> Any:
    from services.core import bus

    settings = get_settings()
    if not settings.kafka_bootstrap:
        _fail("RELKD_KAFKA_BOOTSTRAP is empty: set it to the cluster `relkd up` printed")
    return bus.Publisher(settings)


@catalog_app.command("upsert")
def upsert_command(
    file: Annotated[
        Path, typer.Argument(help="Products: .jsonl (one JSON object a line) or .parquet.")
    ],
    batch: Annotated[int, typer.Option(min=1, help="Products per product_changed request.")] = 500,
) -> None:
    """Publish new or edited products as product_changed requests (index, labels, label store)."""
    from services.candidate_generation.service import (
        product_changed_request,
        publish_relabel_request,
    )

    try:
        rows = read_products(file)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    if not rows:
        _fail(f"{file}: no products")
    publisher = _publisher()
    try:
        requests = 0
        for chunk in _chunks(rows, batch):
            request = product_changed_request([product_message(p) for p in chunk], PRODUCER)
            publish_relabel_request(publisher, request)
            requests += 1
    finally:
        publisher.close()
    console.print(f"published {len(rows)} products in {requests} product_changed request(s)")


def served_teacher(address: str, timeout_s: float = 60.0) -> common_pb2.ModelRef:
    """The teacher the teacher-labeling service at `address` labels with (one tiny Label call)."""
    from relevance.v1 import teacher_labeling_pb2, teacher_labeling_pb2_grpc

    from services.core.grpc_security import client_channel

    probe = teacher_labeling_pb2.LabelPair(
        query="probe", product=common_pb2.Product(product_id="probe", title="probe")
    )
    with client_channel(address, get_settings()) as channel:
        reply = teacher_labeling_pb2_grpc.TeacherLabelingStub(channel).Label(
            teacher_labeling_pb2.LabelRequest(pairs=[probe]), timeout=timeout_s
        )
    return reply.teacher


def promote_command(
    checkpoint: Annotated[Path, typer.Argument(help="The teacher checkpoint now rolled out.")],
    teacher_address: Annotated[
        str | None,
        typer.Option(help="teacher-labeling gRPC address to check; default: the local one."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            help="Refuse unless teacher-labeling already serves CHECKPOINT's version "
            "(otherwise the re-queued pairs would be labeled by the old teacher)."
        ),
    ] = True,
) -> None:
    """Publish teacher_changed: pairs labeled by older teachers are re-queued for this one."""
    import grpc

    settings = get_settings()
    try:
        teacher = read_teacher_spec(checkpoint).model_ref.to_proto()
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    if check:
        address = teacher_address or f"{settings.grpc_host}:{settings.teacher_labeling_port}"
        try:
            serving = served_teacher(address)
        except grpc.RpcError as exc:
            _fail(f"teacher-labeling at {address}: {exc.code().name}: {exc.details()}")
        if serving.version != teacher.version:
            _fail(
                f"teacher-labeling at {address} serves {serving.name} {serving.version}, not "
                f"{teacher.name} {teacher.version}: roll it out first (or pass --no-check)"
            )
    from services.candidate_generation.service import publish_relabel_request
    from services.core import bus

    request = topics_pb2.RelabelRequest(
        meta=bus.event_meta(PRODUCER), teacher_changed=topics_pb2.TeacherChanged(teacher=teacher)
    )
    publisher = _publisher()
    try:
        publish_relabel_request(publisher, request)
    finally:
        publisher.close()
    console.print(f"published teacher_changed for {teacher.name} {teacher.version}")


@relabel_app.command("status")
def status_command(
    state_dir: Annotated[
        Path | None,
        typer.Option(help="candidate-generation's state directory; default: its setting."),
    ] = None,
) -> None:
    """Pairs queued, re-queued and pending per teacher version, and the hour's budget left."""
    from services.candidate_generation.requeue import BACKLOG_FILE, RelabelBacklog
    from services.candidate_generation.settings import CandidateSettings

    own = CandidateSettings()
    path = (state_dir or own.state_dir) / BACKLOG_FILE
    if not path.exists():
        _fail(f"{path}: no relabel backlog yet (no teacher_changed request was handled here)")
    backlog = RelabelBacklog(path, own.requeue_pairs_per_hour)
    try:
        progress, budget_left = backlog.progress(), backlog.budget_left()
    finally:
        backlog.close()
    table = Table("teacher version", "queued", "requeued", "missing", "pending")
    for p in progress:
        table.add_row(
            p.teacher_version, str(p.queued), str(p.requeued), str(p.missing), str(p.pending)
        )
    console.print(table)
    console.print(
        f"budget: {own.requeue_pairs_per_hour} pairs/hour, {budget_left} left this hour",
        highlight=False,
    )
