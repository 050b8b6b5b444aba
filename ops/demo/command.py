"""`relkd demo`: run the distillation loop and print whether the student beat the teacher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ops.demo.pipeline import SCALES, STAGES, DemoRun, default_run_dir, run_demo
from services.core.logging import configure_logging
from services.core.settings import get_settings


def demo_command(
    scale: Annotated[str, typer.Option(help=f"Run size: {', '.join(SCALES)}.")] = "default",
    out: Annotated[
        Path | None, typer.Option(help="Run directory [default: RELKD_DATA_DIR/demo].")
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Run only these stages, from the previous stages' outputs: {', '.join(STAGES)}."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulator, sampling and training.")] = 0,
    labels_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds the candidates stage waits for every published pair to be labeled "
            "and stored before it fails with the counts."
        ),
    ] = 1800.0,
) -> None:
    """Run the whole distillation loop on the embedded stack and write a report."""
    configure_logging("relkd-demo", get_settings().log_level)
    if scale not in SCALES:
        raise typer.BadParameter(f"expected one of {', '.join(SCALES)}", param_hint="--scale")
    bad = sorted(set(stage or ()) - set(STAGES))
    if bad:
        raise typer.BadParameter(
            f"unknown {bad}; stages are {', '.join(STAGES)}", param_hint="--stage"
        )
    run = DemoRun(out or default_run_dir(), scale, seed, labels_timeout)
    report = run_demo(run, tuple(stage) if stage else STAGES)
    if not report.exists():
        typer.echo(
            f"stages done: {', '.join(stage or STAGES)}; run `--stage report` for the report"
        )
        return
    results = json.loads((report.parent / "results.json").read_text())
    table = Table(title="held-out test queries (human labels)")
    for column in (
        "model",
        "aug. queries",
        "seeds",
        "NDCG@10",
        "95% CI",
        "NDCG@5",
        "MRR",
        "accuracy",
        "p50 ms",
        "p99 ms",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results:
        table.add_row(
            r["model"],
            "–" if r["augmented_queries"] is None else str(r["augmented_queries"]),
            str(r["seeds"]),
            f"{r['ndcg10']:.4f}",
            "–" if r["ndcg10_ci"] is None else f"{r['ndcg10_ci'][0]:.4f}-{r['ndcg10_ci'][1]:.4f}",
            f"{r['ndcg5']:.4f}",
            f"{r['mrr']:.4f}",
            "–" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
            f"{r['latency_p50_ms']:.1f}",
            f"{r['latency_p99_ms']:.1f}",
        )
    Console().print(table)
    typer.echo("At equal human data (NDCG@10 difference, paired bootstrap 95% CI):")
    for c in json.loads((report.parent / "comparisons.json").read_text()):
        d = c["ndcg10_difference"]
        verdict = "better" if d["a_better"] else "not better"
        typer.echo(
            f"  {c['student']} - {c['reference']}: {d['mean']:+.4f} "
            f"({d['ci95'][0]:+.4f} to {d['ci95'][1]:+.4f}): {verdict}"
        )
    typer.echo(f"report: {report}")
