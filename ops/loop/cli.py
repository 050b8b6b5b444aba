"""`relkd loop run-round|status` and `relkd controller` (docs/loop.md).

The controller (services.controller) decides; this module wires it to where it runs:
RELKD_CONTROLLER_TRAINER=local trains in a subprocess and promotes into the embedded
stack's Triton repository, =kubernetes submits Jobs and rolls out through KServe.
"""

from __future__ import annotations

import json
import signal
import threading
import urllib.request
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ops.loop.demo import demo_command
from services.controller.controller import Controller, LocalTrainer, TritonPromoter
from services.controller.ledger import Decision, Ledger, RoundRecord
from services.controller.settings import ControllerSettings, TrainerKind
from services.core.logging import configure_logging
from services.core.metrics import start_metrics_server
from services.label_store.settings import LabelStoreSettings
from services.label_store.store import LabelStore

app = typer.Typer(help="The distillation loop: rounds, gate, ledger.", no_args_is_help=True)
app.command("demo")(demo_command)
console = Console()
errors = Console(stderr=True)


def build_controller(settings: ControllerSettings, store: LabelStore | None = None) -> Controller:
    """The controller `settings` describe, on `store` (default: RELKD_LABEL_STORE_DIR's)."""
    store = store or LabelStore(LabelStoreSettings().dir)
    if settings.trainer == TrainerKind.KUBERNETES:
        from ops.jobs.launcher import JobLauncher, RunSpec
        from ops.jobs.settings import K8sSettings
        from ops.loop.cluster import JobTrainer, KServePromoter
        from ops.rollout.kserve_rollout import StudentRollout
        from ops.rollout.service_spec import StudentService
        from ops.rollout.settings import RolloutSettings

        k8s, rollout = K8sSettings(), RolloutSettings()
        template = RunSpec(
            kind="student-train", namespace=k8s.jobs_namespace, image=k8s.trainer_image
        )
        service = StudentService(
            name=rollout.name,
            namespace=rollout.namespace,
            storage_uri=f"{settings.storage_uri_base}/initial",
            runtime=rollout.runtime,
            runtime_version=rollout.runtime_version,
            gpus=rollout.gpus,
            min_replicas=rollout.min_replicas,
            max_replicas=rollout.max_replicas,
            service_account=rollout.service_account,
            deployment_mode=rollout.deployment_mode,
            canary_traffic_percent=rollout.canary_percent,
        )
        return Controller(
            settings,
            store,
            JobTrainer(
                JobLauncher.from_kubeconfig(k8s.jobs_namespace, k8s.kubeconfig),
                template,
                settings.train_timeout_s,
            ),
            KServePromoter(StudentRollout.connect(k8s.kubeconfig), service, settings),
        )
    return Controller(
        settings,
        store,
        LocalTrainer(settings.train_timeout_s),
        TritonPromoter(
            settings.triton_repository,
            settings.model_name,
            settings.int8_serving,
            settings.triton_url,
        ),
    )


def scrape_gauge(url: str, name: str, timeout_s: float = 5.0) -> float | None:
    """The value of gauge `name` at a Prometheus /metrics `url` (None: not exported)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def _disagreement_source(settings: ControllerSettings) -> Callable[[], float | None] | None:
    url = settings.disagreement_metrics_url
    if not url:
        return None
    return lambda: scrape_gauge(url, settings.disagreement_metric)


def _print_round(record: RoundRecord) -> None:
    colour = {Decision.PROMOTED: "green", Decision.REFUSED: "yellow"}.get(record.decision, "red")
    console.print(
        f"round {record.round} (snapshot {record.snapshot}): "
        f"[{colour}]{record.decision}[/{colour}]: {record.reason}",
        highlight=False,
    )


@app.command("run-round")
def run_round_command(
    snapshot: Annotated[
        str | None, typer.Option(help="Snapshot id to train on; default: the newest.")
    ] = None,
) -> None:
    """Run one round now (train, gate, promote or refuse); exit 1 if it failed."""
    configure_logging("controller")
    record = build_controller(ControllerSettings()).run_round(snapshot, trigger="on request")
    _print_round(record)
    if record.decision == Decision.FAILED:
        raise typer.Exit(1)


def _ci(record: RoundRecord, name: str) -> str:
    metric = record.metrics.get(name)
    if metric is None:
        return "-"
    if metric.ci95 is None:
        return f"{metric.value:.4f}"
    return f"{metric.value:.4f} [{metric.ci95[0]:.4f}, {metric.ci95[1]:.4f}]"


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Every round as JSON.")] = False,
) -> None:
    """Print the ledger: every round, its gate metrics with 95% intervals and decision."""
    settings = ControllerSettings()
    records = Ledger(settings.ledger).rounds()
    if as_json:
        console.print_json(json.dumps([r.to_json() for r in records]))
        return
    if not records:
        console.print(f"no rounds yet in {settings.ledger}")
        return
    table = Table(
        "round",
        "snapshot",
        "new labels",
        "candidate NDCG@10 [95% CI]",
        "serving NDCG@10 [95% CI]",
        "delta [95% CI]",
        "p99 ms",
        "int8 rho",
        "decision",
        "reason",
        title=f"ledger {settings.ledger}",
    )
    for r in records:
        table.add_row(
            str(r.round),
            r.snapshot or "-",
            str(r.label_counts.get("new_labels", "-")),
            _ci(r, "candidate.ndcg@10"),
            _ci(r, "serving.ndcg@10"),
            _ci(r, "delta.ndcg@10"),
            f"{r.candidate_p99_ms:.1f}" if r.candidate_p99_ms is not None else "-",
            _ci(r, "int8.spearman"),
            str(r.decision),
            r.reason,
        )
    console.print(table)
    serving = Ledger(settings.ledger).serving()
    console.print(f"serving: {f'round {serving.round}' if serving else 'the initial student'}")


def controller_command() -> None:
    """Watch the label store and run a round whenever enough new labels arrived (or the
    oldest waited long enough); roll back a promotion whose live disagreement rate is too
    high. Stops on SIGTERM/SIGINT after the round in progress."""
    configure_logging("controller")
    settings = ControllerSettings()
    controller = build_controller(settings)
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    errors.print(
        f"controller: label store {controller.store.root}, ledger {settings.ledger}, "
        f"trainer {settings.trainer}, checking every {settings.check_interval_s:g} s",
        highlight=False,
    )
    controller.serve(stop, _disagreement_source(settings))
