"""`relkd data ...`: catalog simulation, dataset loading and download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from training.data import download as download_mod
from training.data.simulator import PROFILES, simulate
from training.data.summary import summarize

app = typer.Typer(help="Simulate, load and download relevance datasets.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    for section, values in summary.items():
        if not isinstance(values, dict):
            console.print(f"[bold]{section}[/bold]: {values}")
            continue
        table = Table(title=section, show_header=False)
        for key, value in values.items():
            table.add_row(str(key), str(value))
        console.print(table)


@app.command("simulate")
def simulate_command(
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")] = Path(
        ".relkd/data/sim"
    ),
    products: Annotated[int, typer.Option(help="Number of products.")] = 3000,
    queries: Annotated[int, typer.Option(help="Labeled queries (train+dev+test).")] = 400,
    unlabeled: Annotated[
        int | None, typer.Option(help="Unlabeled queries (default: as many as labeled).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same dataset.")] = 0,
    raters: Annotated[int, typer.Option(help="Simulated raters per judged pair.")] = 5,
    rater_noise: Annotated[float, typer.Option(help="Chance a rater's vote slips.")] = 0.15,
    profile: Annotated[
        str,
        typer.Option(
            help="Difficulty: 'standard' (lexical matching does well) or 'hard' (synonyms, "
            "paraphrases, negations, brand alternatives; BM25 near 0.79 NDCG@10)."
        ),
    ] = "standard",
    as_json: JsonOpt = False,
) -> None:
    """Write a simulated catalog with graded, rater-labeled queries and print its summary."""
    if profile not in PROFILES:
        raise typer.BadParameter(f"--profile must be one of {sorted(PROFILES)}, got {profile!r}")
    path = simulate(
        out,
        num_products=products,
        num_queries=queries,
        seed=seed,
        raters=raters,
        rater_noise=rater_noise,
        num_unlabeled=unlabeled,
        show_progress=not as_json,
        profile=profile,
    )
    _print_summary(summarize(path), as_json)


@app.command("summary")
def summary_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory.")],
    as_json: JsonOpt = False,
) -> None:
    """Print a dataset's sizes, splits, label distribution and rater agreement."""
    _print_summary(summarize(dataset), as_json)


@app.command("load-wands")
def load_wands_command(
    source: Annotated[Path, typer.Argument(help="Folder with product.csv, query.csv, label.csv.")],
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")] = Path(
        ".relkd/data/wands"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Convert the WANDS CSV files into a dataset."""
    from training.data.loaders import load_wands  # pandas: only when converting

    _print_summary(summarize(load_wands(source, out)), as_json)


@app.command("load-esci")
def load_esci_command(
    source: Annotated[Path, typer.Argument(help="Folder with the ESCI parquet files.")],
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")] = Path(
        ".relkd/data/esci"
    ),
    version: Annotated[str, typer.Option(help="'small' (task 1) or 'large'.")] = "small",
    locale: Annotated[str, typer.Option(help="Product locale: us, es or jp.")] = "us",
    as_json: JsonOpt = False,
) -> None:
    """Convert the ESCI parquet files into a dataset."""
    from training.data.loaders import load_esci  # pandas: only when converting

    _print_summary(summarize(load_esci(source, out, version=version, locale=locale)), as_json)


@app.command("scarce")
def scarce_command(
    source: Annotated[Path, typer.Argument(help="Dataset to derive from.")],
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    keep_train: Annotated[int, typer.Option(help="Train queries that keep their judgments.")],
    seed: Annotated[int, typer.Option(help="Seed of the choice of kept queries.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Copy a dataset keeping KEEP_TRAIN train queries labeled; the rest become unlabeled."""
    from training.data.subsets import scarce_human_labels

    try:
        path = scarce_human_labels(source, out, keep_train, seed)
    except ValueError as exc:  # DatasetError included
        raise typer.BadParameter(str(exc)) from exc
    _print_summary(summarize(path), as_json)


@app.command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="Dataset to fetch: wands or esci.")],
    dest: Annotated[Path | None, typer.Option(help="Folder for the raw files.")] = None,
) -> None:
    """Download the raw files of a public dataset (pinned URLs, checksums verified)."""
    folder = download_mod.download(name, dest)
    typer.echo(f"{name} files in {folder}")
