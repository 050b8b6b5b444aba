"""`relkd labels ...`: the label store's snapshots and what is waiting for the next one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Label store: status, snapshots.", no_args_is_help=True)
StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", help="Label store directory [default: RELKD_LABEL_STORE_DIR]."),
]


def _store_dir(store: Path | None) -> Path:
    from services.label_store.settings import LabelStoreSettings

    return store if store is not None else LabelStoreSettings().dir


def _describe(snapshot: Any) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "parent": snapshot.parent,
        "created_at": snapshot.created_at,
        "counts": snapshot.counts,
        "path": str(snapshot.path),
    }


@app.command("status")
def status_command(store: StoreOpt = None) -> None:
    """Print the newest snapshot, the snapshot count and the rows waiting for the next cut."""
    from services.label_store.store import LabelStore
    from services.label_store.writer import pending

    root = _store_dir(store)
    opened = LabelStore(root)
    ids = opened.snapshot_ids()
    waiting = pending(root)
    typer.echo(
        json.dumps(
            {
                "store": str(root),
                "snapshots": len(ids),
                "latest": _describe(opened.open()) if ids else None,
                "pending": {
                    "labels": waiting.labels,
                    "products": waiting.products,
                    "oldest_age_s": round(waiting.oldest_age_s, 1),
                },
            },
            indent=2,
        )
    )


@app.command("snapshot")
def snapshot_command(store: StoreOpt = None) -> None:
    """Cut a snapshot of everything stored so far (safe while the service runs)."""
    from services.label_store.store import LabelStore
    from services.label_store.writer import cut_snapshot

    root = _store_dir(store)
    snapshot = cut_snapshot(root, reason="on demand")
    if snapshot is None:
        latest = LabelStore(root).open()
        typer.echo(json.dumps({"created": False, "latest": _describe(latest)}, indent=2))
        return
    typer.echo(json.dumps({"created": True, "snapshot": _describe(snapshot)}, indent=2))


@app.command("list")
def list_command(store: StoreOpt = None) -> None:
    """List every snapshot, oldest first, with its counts."""
    from services.label_store.store import LabelStore

    opened = LabelStore(_store_dir(store))
    for snapshot_id in opened.snapshot_ids():
        snapshot = opened.open(snapshot_id)
        counts = " ".join(f"{k}={v}" for k, v in snapshot.counts.items())
        typer.echo(f"{snapshot.id}  {snapshot.created_at}  {counts}")
