"""`relkd jobs`: submit, list, watch, stream logs of and cancel training Jobs."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from kubernetes.client.exceptions import ApiException
from rich.console import Console
from rich.table import Table

from ops.jobs.launcher import JobLauncher, RunKind, RunSpec, build_job, job_phase
from ops.jobs.settings import K8sSettings
from training.config_cli import SetOption, config_command, load_config

app = typer.Typer(help="Training runs as Kubernetes Jobs.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


def _launcher(namespace: str | None) -> JobLauncher:
    settings = K8sSettings()
    return JobLauncher.from_kubeconfig(namespace or settings.jobs_namespace, settings.kubeconfig)


def _api_error(error: ApiException) -> typer.Exit:
    errors.print(f"[red]Kubernetes API error {error.status}: {error.reason}")
    return typer.Exit(1)


NamespaceOption = typer.Option(None, "--namespace", "-n", help="Default: RELKD_JOBS_NAMESPACE.")


@app.command("submit", cls=config_command(RunSpec, file_option="--file"))
def submit_command(
    kind: RunKind | None = typer.Argument(None, help="Run kind (or `kind:` in --file)."),
    file: Path | None = typer.Option(
        None, "--file", "-f", dir_okay=False, help="YAML or JSON file of run fields (below)."
    ),
    set_: SetOption = None,
    name: str | None = typer.Option(None, help="Job name; default: generated."),
    namespace: str | None = NamespaceOption,
    image: str | None = typer.Option(None, help="Trainer image; default: RELKD_TRAINER_IMAGE."),
    gpus: int | None = typer.Option(None, help="GPUs per node."),
    nodes: int | None = typer.Option(None, help="Nodes (torchrun in an Indexed Job when > 1)."),
    config: str | None = typer.Option(None, "--config", help="Config path in the container."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the manifest (for `kubectl apply -f -`); submit nothing."
    ),
) -> None:
    """Submit a training Job built from a file, --set and flags (flags win)."""
    settings = K8sSettings()
    spec = load_config(
        RunSpec,
        file,
        set_ or [],
        defaults={"namespace": settings.jobs_namespace, "image": settings.trainer_image},
        file_option="--file",
        kind=kind,
        name=name,
        namespace=namespace,
        image=image,
        gpus=gpus,
        nodes=nodes,
        config=config,
    )
    try:
        manifest = build_job(spec)
    except ValueError as error:
        errors.print(f"[red]{error}")
        raise typer.Exit(2) from error

    if dry_run:
        typer.echo(yaml.safe_dump(manifest, sort_keys=False), nl=False)
        return
    try:
        job = _launcher(manifest["metadata"]["namespace"]).submit(manifest)
    except ApiException as error:
        raise _api_error(error) from error
    console.print(f"submitted job {job.metadata.name} in {job.metadata.namespace}")


@app.command("list")
def list_command(namespace: str | None = NamespaceOption) -> None:
    """Training Jobs in the namespace, with their phase."""
    try:
        jobs = _launcher(namespace).list()
    except ApiException as error:
        raise _api_error(error) from error
    table = Table("name", "run", "phase", "succeeded", "failed")
    for job in jobs:
        labels = job.metadata.labels or {}
        status = job.status
        table.add_row(
            job.metadata.name,
            labels.get("app.kubernetes.io/component", ""),
            job_phase(job),
            str((status.succeeded if status else 0) or 0),
            str((status.failed if status else 0) or 0),
        )
    console.print(table)


@app.command("status")
def status_command(
    name: str,
    namespace: str | None = NamespaceOption,
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow until it ends."),
    timeout_s: int = typer.Option(0, help="Stop watching after this many seconds (0: never)."),
) -> None:
    """Phase of a Job; with --watch, every change until it succeeds or fails (exit 1 if so)."""
    launcher = _launcher(namespace)
    try:
        if not watch:
            console.print(f"{name}: {job_phase(launcher.get(name))}")
            return
        phase = "Pending"
        with console.status(f"watching {name}"):
            for phase, _job in launcher.watch(name, timeout_s=timeout_s):
                console.print(f"{name}: {phase}")
    except ApiException as error:
        raise _api_error(error) from error
    if phase == "Failed":
        raise typer.Exit(1)


@app.command("logs")
def logs_command(
    name: str,
    namespace: str | None = NamespaceOption,
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the Pods end."),
) -> None:
    """Logs of a Job's trainer Pods."""
    try:
        for line in _launcher(namespace).logs(name, follow=follow):
            typer.echo(line)
    except LookupError as error:
        errors.print(f"[red]{error}")
        raise typer.Exit(1) from error
    except ApiException as error:
        raise _api_error(error) from error


@app.command("cancel")
def cancel_command(name: str, namespace: str | None = NamespaceOption) -> None:
    """Delete a Job and its Pods."""
    try:
        _launcher(namespace).cancel(name)
    except ApiException as error:
        raise _api_error(error) from error
    console.print(f"cancelled job {name}")
