"""`relkd k8s validate`: the offline checks of k8s/ and skaffold.yaml (ops.jobs.validate).

Kept apart from the checks so that `relkd` starts without their linters and schema
libraries (yamllint, kubernetes-validate, jsonschema): they load when the command runs.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import Progress

from ops.jobs.settings import CHECKS, K8sSettings

CHECKS_HELP = f"Checks to run (repeatable): {', '.join(CHECKS)}."

app = typer.Typer(help="Offline checks of the Kubernetes deployment.", no_args_is_help=True)


@app.command("validate")
def validate_command(
    check: list[str] = typer.Option(CHECKS, "--check", help=CHECKS_HELP),
) -> None:
    """Lint, render and validate k8s/ and skaffold.yaml offline; exit 1 on any problem."""
    from ops.jobs.validate import validate_repository

    console = Console(stderr=True)
    settings = K8sSettings()
    if not (settings.schemas_dir / "crds").is_dir():
        console.print(f"[red]schemas not found in {settings.schemas_dir}: set RELKD_SCHEMAS_DIR")
        raise typer.Exit(2)
    try:
        with Progress(console=console, transient=True) as progress:
            problems = validate_repository(settings=settings, checks=check, progress=progress)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--check") from error
    for problem in problems:
        console.print(str(problem), markup=False, highlight=False)
    if problems:
        console.print(f"[red]{len(problems)} problem(s)")
        raise typer.Exit(1)
    console.print(f"[green]all checks passed: {', '.join(check)}")


if __name__ == "__main__":
    app()
