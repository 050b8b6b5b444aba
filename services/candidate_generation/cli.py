"""`relkd candidates ...`: build the catalog index, run augmentation batches, measure recall.

The commands import the index, bus and model code themselves so `relkd --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.candidate_generation.settings import CandidateSettings

app = typer.Typer(
    help="Candidate generation: catalog index, augmentation runs, recall.", no_args_is_help=True
)

IndexDirOpt = Annotated[
    Path | None, typer.Option(help="Catalog index directory [default: RELKD_CANDIDATE_INDEX_DIR].")
]


@app.command("build-index")
def build_index_command(
    dataset: Annotated[
        Path, typer.Option(help="Dataset directory whose products table is indexed.")
    ],
    index_dir: IndexDirOpt = None,
) -> None:
    """Encode and index a catalog, then save it for the service to load."""
    from services.candidate_generation.index import CatalogIndex, MiniLMEncoder
    from training.data import storage

    out = index_dir or CandidateSettings().index_dir
    products = storage.read_table(dataset, "products")
    index = CatalogIndex.build(products, MiniLMEncoder(), progress=True)
    index.save(out)
    typer.echo(
        json.dumps({"index_dir": str(out), "version": index.version, "products": len(index)})
    )


@app.command("generate")
def generate_command(
    queries: Annotated[int, typer.Option(help="Number of queries to expand.")],
    per_query: Annotated[
        int | None, typer.Option(help="Candidates per query [default: RELKD_CANDIDATE_PER_QUERY].")
    ] = None,
    log: Annotated[
        Path | None, typer.Option(help="Query log (.jsonl or one query a line).")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="Dataset whose unlabeled queries are used.")
    ] = None,
    synthetic: Annotated[
        bool, typer.Option(help="Top up with synthetic queries for unreached products.")
    ] = True,
    rate: Annotated[
        float | None, typer.Option(help="Rate limit in published pairs per second.")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="teacher_labels Parquet of already-labeled pairs.")
    ] = None,
    teacher_version: Annotated[
        str | None, typer.Option(help="Teacher version whose labels count.")
    ] = None,
    index_dir: IndexDirOpt = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Ledger directory [default: RELKD_CANDIDATE_STATE_DIR].")
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap [default: RELKD_KAFKA_BOOTSTRAP].")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Append the batches to this JSONL file (for `relkd teacher label "
            "--candidates`) instead of publishing them to Kafka.",
        ),
    ] = None,
) -> None:
    """Publish spectrum-sampled candidate batches to relevance.candidates.v1, resumably.

    With --out the same batches go to a file, resumable through a ledger beside it.
    """
    from contracts.candidates import CandidateFile
    from services.candidate_generation.batch import BatchSink, Ledger, run_batch, select_queries
    from services.candidate_generation.queries import (
        QueryRecord,
        read_query_log,
        simulator_queries,
    )
    from services.candidate_generation.sampling import load_labeled_pairs
    from services.candidate_generation.service import CandidateEngine
    from services.core.bus import Publisher
    from services.core.settings import get_settings

    own = CandidateSettings()
    updates: dict[str, object] = {"per_query": per_query} if per_query else {}
    if index_dir is not None:
        updates["index_dir"] = index_dir
    own = own.model_copy(update=updates)
    settings = get_settings()
    if out is None and not (bootstrap or settings.kafka_bootstrap):
        raise typer.BadParameter(
            "no Kafka: set RELKD_KAFKA_BOOTSTRAP or pass it", param_hint="--bootstrap"
        )
    if (labels is None) != (teacher_version is None):
        raise typer.BadParameter("give both or neither", param_hint="--labels/--teacher-version")
    labeled = (
        frozenset(load_labeled_pairs(labels, teacher_version))
        if labels and teacher_version
        else frozenset()
    )
    engine = CandidateEngine.from_settings(own)
    engine.labeled = labeled
    index = engine.require_index()
    pool: list[QueryRecord] = []
    if log is not None:
        pool += read_query_log(log)
    if dataset is not None:
        pool += simulator_queries(dataset)
    selected = select_queries(index, pool, queries, synthetic=synthetic, seed=own.seed)
    sink: BatchSink
    if out is not None:
        # The file's own ledger: what went to Kafka (or another file) is not in this one.
        sink = CandidateFile(out)
        ledger = Ledger(out.with_name(out.name + ".ledger.sqlite"))
    else:
        sink = Publisher(settings, bootstrap=bootstrap)
        ledger = Ledger((state_dir or own.state_dir) / "ledger.sqlite")
    try:
        report = run_batch(index, engine.sampler(), selected, sink, ledger, pairs_per_second=rate)
    finally:
        sink.close()
        ledger.close()
    typer.echo(json.dumps({**report.__dict__, "pairs_per_second": report.pairs_per_second}))


@app.command("recall")
def recall_command(
    dataset: Annotated[
        Path, typer.Option(help="Dataset with judgments (e.g. `relkd data simulate`).")
    ],
    k: Annotated[int, typer.Option(help="Cut-off rank.")] = 100,
    split: Annotated[str, typer.Option(help="Query split to evaluate.")] = "test",
    index_dir: IndexDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recall@k of Exact products for BM25, dense and fused retrieval."""
    from services.candidate_generation.evaluation import exact_recall
    from services.candidate_generation.index import CatalogIndex, MiniLMEncoder

    index = CatalogIndex.load(index_dir or CandidateSettings().index_dir, MiniLMEncoder())
    result = exact_recall(index, dataset, k=k, split=split, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"recall@{k} of Exact products ({split})")
    for column in ("mode", "recall", "queries"):
        table.add_column(column)
    for mode, values in result.items():
        table.add_row(mode, f"{values['recall']:.4f}", str(values["queries"]))
    Console().print(table)
