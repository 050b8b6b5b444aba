"""`relkd rollout`: a new student as a KServe InferenceService, canary, promote, rollback.

kserve is imported inside the commands (from ops.rollout.kserve_rollout), never
at module level: `relkd` loads every area's CLI at start-up, and kserve cannot share
a process with ``tritonclient.grpc`` (duplicate protobuf symbols).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import typer
import yaml
from rich.console import Console
from rich.table import Table

from ops.jobs.settings import K8sSettings
from ops.rollout.service_spec import StudentService
from ops.rollout.settings import DeploymentMode, RolloutSettings
from training.config_cli import ConfigFileOption, SetOption, config_command, load_config

if TYPE_CHECKING:
    from ops.rollout.kserve_rollout import RolloutStatus, StudentRollout

app = typer.Typer(
    help="Student rollout on KServe (InferenceService, canary).", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)

NameOption = typer.Option(None, "--name", help="InferenceService; default: RELKD_ROLLOUT_NAME.")
NamespaceOption = typer.Option(None, "--namespace", "-n", help="Default: RELKD_ROLLOUT_NAMESPACE.")


def _rollout() -> StudentRollout:
    from ops.rollout.kserve_rollout import StudentRollout

    return StudentRollout.connect(K8sSettings().kubeconfig)


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[red]{message}", highlight=False)
    raise typer.Exit(code)


def _show(status: RolloutStatus) -> None:
    console.print(
        f"{status.namespace}/{status.name} ({status.deployment_mode}): "
        f"{'ready' if status.ready else 'not ready'}, url {status.url or '-'}",
        highlight=False,
    )
    console.print(
        f"version {status.version or '-'} ({status.storage_uri or '-'}), "
        f"previous {status.previous_version or '-'}, "
        f"canary {'-' if status.canary_traffic_percent is None else status.canary_traffic_percent}"
        f"{'' if status.canary_traffic_percent is None else '%'}",
        highlight=False,
    )
    if status.traffic:
        table = Table("revision", "percent", "latest", "tag")
        for target in status.traffic:
            table.add_row(
                target.revision, f"{target.percent}%", "yes" if target.latest else "", target.tag
            )
        console.print(table)


@app.command("deploy", cls=config_command(StudentService))
def deploy_command(
    storage_uri: str = typer.Argument(
        ..., help="Triton model repository of the student, e.g. s3://bucket/students/v3."
    ),
    config: ConfigFileOption = None,
    set_: SetOption = None,
    name: str | None = NameOption,
    namespace: str | None = NamespaceOption,
    canary: int | None = typer.Option(
        None,
        "--canary",
        help="Traffic % to the new version (field canary_traffic_percent); default: "
        "RELKD_ROLLOUT_CANARY_PERCENT in Serverless mode.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the manifest YAML (validated against the CRD); no API call."
    ),
) -> None:
    """Create the InferenceService, or move it to STORAGE_URI with a canary share of traffic.

    RELKD_ROLLOUT_* settings give the defaults of their fields; --config and --set win.
    """
    from ops.rollout.kserve_rollout import (
        RolloutError,
        build_inference_service,
        to_manifest,
        validate_manifest,
    )

    settings = RolloutSettings()
    shared = ("name", "namespace", "runtime", "runtime_version", "gpus", "min_replicas")
    shared += ("max_replicas", "service_account", "deployment_mode")
    spec = load_config(
        StudentService,
        config,
        set_ or [],
        defaults={field: getattr(settings, field) for field in shared},
        storage_uri=storage_uri,
        name=name,
        namespace=namespace,
        canary_traffic_percent=canary,
    )
    given = "canary_traffic_percent" in spec.model_fields_set
    if not given and spec.deployment_mode is DeploymentMode.SERVERLESS:
        spec = spec.model_copy(update={"canary_traffic_percent": settings.canary_percent})

    if dry_run:
        manifest = to_manifest(build_inference_service(spec))
        try:
            problems = validate_manifest(manifest)
        except FileNotFoundError as error:
            errors.print(f"[yellow]not validated: {error}", highlight=False)
            problems = []
        if problems:
            _fail("manifest does not match the InferenceService CRD:\n" + "\n".join(problems))
        typer.echo(yaml.safe_dump(manifest, sort_keys=False), nl=False)
        return

    try:
        status = _rollout().deploy(spec)
    except RolloutError as error:
        _fail(str(error))
    console.print(f"deployed {spec.version} to {spec.namespace}/{spec.name}", highlight=False)
    _show(status)


@app.command("promote")
def promote_command(name: str | None = NameOption, namespace: str | None = NamespaceOption) -> None:
    """Send all traffic to the canary (the latest version)."""
    from ops.rollout.kserve_rollout import RolloutError

    settings = RolloutSettings()
    try:
        status = _rollout().promote(name or settings.name, namespace or settings.namespace)
    except RolloutError as error:
        _fail(str(error))
    _show(status)


@app.command("rollback")
def rollback_command(
    name: str | None = NameOption, namespace: str | None = NamespaceOption
) -> None:
    """Send all traffic back to the previous version."""
    from ops.rollout.kserve_rollout import RolloutError

    settings = RolloutSettings()
    try:
        status = _rollout().rollback(name or settings.name, namespace or settings.namespace)
    except RolloutError as error:
        _fail(str(error))
    _show(status)


@app.command("status")
def status_command(name: str | None = NameOption, namespace: str | None = NamespaceOption) -> None:
    """Readiness, URL, versions and traffic split of the InferenceService."""
    from ops.rollout.kserve_rollout import RolloutError

    settings = RolloutSettings()
    try:
        status = _rollout().status(name or settings.name, namespace or settings.namespace)
    except RolloutError as error:
        _fail(str(error))
    _show(status)
