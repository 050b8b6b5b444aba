"""`relkd student export` / `relkd student triton-repo`: checked ONNX and Triton models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contracts.artifacts import Precision, Variant

app = typer.Typer(help="Export students to ONNX and Triton model repositories.")


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Student checkpoint directory.")],
    output: Annotated[Path, typer.Argument(help="Directory to write the export to.")],
    int8: Annotated[bool, typer.Option(help="Also write a checked int8 graph for CPU.")] = True,
    products: Annotated[
        Path | None, typer.Option(help="Products Parquet (two-tower: product embeddings).")
    ] = None,
    triton_repo: Annotated[
        Path | None, typer.Option(help="Also add the export to this Triton repository.")
    ] = None,
    variant: Annotated[str, typer.Option(help="Triton variant: cpu or gpu.")] = "cpu",
    precision: Annotated[str, typer.Option(help="cpu variant graph: fp32 or int8.")] = "fp32",
) -> None:
    """Export CHECKPOINT to OUTPUT (ONNX checked against torch), optionally to Triton."""
    # Imported here: torch and tritonclient stay out of `relkd --help` and `relkd rollout`
    # (kserve and tritonclient.grpc cannot share a process).
    from training.export.exporter import export_student
    from training.export.onnx_export import ExportAccuracyError

    try:
        result = export_student(checkpoint, output, int8=int8, products=products)
    except (ExportAccuracyError, ValueError) as err:
        raise typer.BadParameter(str(err)) from err
    for check in result.checks:
        typer.echo(
            f"{check.graph}: {check.metric} = {check.max_error:.3g} "
            f"(tolerance {check.tolerance:.3g})"
        )
    typer.echo(f"exported {result.spec.kind} {result.spec.name}:{result.spec.version} to {output}")
    if triton_repo is not None:
        _write_repo(output, triton_repo, variant, precision, None, None)


@app.command("triton-repo")
def triton_repo_command(
    export_dir: Annotated[Path, typer.Argument(help="Output of `export`.")],
    repository: Annotated[Path, typer.Argument(help="Triton model repository to add to.")],
    variant: Annotated[str, typer.Option(help="cpu (Python backend) or gpu (ensemble).")] = "cpu",
    precision: Annotated[str, typer.Option(help="cpu variant graph: fp32 or int8.")] = "fp32",
    model_name: Annotated[str | None, typer.Option(help="Default: the student's name.")] = None,
    version: Annotated[int | None, typer.Option(help="Default: the student's version.")] = None,
) -> None:
    """Add an exported cross-encoder to a Triton model repository as a new version."""
    _write_repo(export_dir, repository, variant, precision, model_name, version)


def _write_repo(
    export_dir: Path,
    repository: Path,
    variant: str,
    precision: str,
    model_name: str | None,
    version: int | None,
) -> None:
    from training.export.triton_repo import write_triton_repository

    if variant not in ("cpu", "gpu"):
        raise typer.BadParameter(f"variant: expected cpu or gpu, got {variant!r}")
    if precision not in ("fp32", "int8"):
        raise typer.BadParameter(f"precision: expected fp32 or int8, got {precision!r}")
    chosen_variant: Variant = "cpu" if variant == "cpu" else "gpu"
    chosen_precision: Precision = "fp32" if precision == "fp32" else "int8"
    try:
        number = write_triton_repository(
            export_dir,
            repository,
            variant=chosen_variant,
            precision=chosen_precision,
            model_name=model_name,
            version=version,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    typer.echo(f"wrote {variant} model version {number} to {repository}")
