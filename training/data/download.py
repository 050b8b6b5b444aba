"""Fetch the raw public datasets for users with internet (never called by tests).

URLs are pinned to commits. ESCI's sha256 are those of its Git LFS objects at that
commit. WANDS stores plain CSVs; only ``query.csv``'s digest is pinned (computed from
the same commit's file); for the two others the first download records its digest in
``checksums.json`` next to the files and later downloads are checked against it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from training.data.settings import DataSettings

_WANDS = "https://raw.githubusercontent.com/wayfair/WANDS/37f00c95b2a2abca6396680976378dc899babb7c/dataset/"
_ESCI = (
    "https://media.githubusercontent.com/media/amazon-science/esci-data/"
    "7e0e3073f5ca36c0b5ff79e847cf99a74597645d/shopping_queries_dataset/"
)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    sha256: str | None


DATASETS: dict[str, tuple[RemoteFile, ...]] = {
    "wands": (
        RemoteFile(
            "query.csv",
            _WANDS + "query.csv",
            "63b61660560fecc33ec490804c7e2b81402ee3e7c31a9cbb5e03736639f68e95",
        ),
        RemoteFile("product.csv", _WANDS + "product.csv", None),
        RemoteFile("label.csv", _WANDS + "label.csv", None),
    ),
    "esci": (
        RemoteFile(
            "shopping_queries_dataset_examples.parquet",
            _ESCI + "shopping_queries_dataset_examples.parquet",
            "4a735b693b4a424a6fc67f5be6e4c811495c488bbf66d02a602d308b2744263a",
        ),
        RemoteFile(
            "shopping_queries_dataset_products.parquet",
            _ESCI + "shopping_queries_dataset_products.parquet",
            "25124442d064d64b26f74082d6fa09438d679efc0c183cf28d19064a2b65a265",
        ),
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(name: str, dest: Path | None = None) -> Path:
    """Download dataset ``name`` into ``dest`` (default: RELKD_DOWNLOAD_DIR/<name>)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    folder = dest or DataSettings().download_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    recorded_path = folder / "checksums.json"
    recorded = json.loads(recorded_path.read_text()) if recorded_path.exists() else {}
    with Progress() as progress:
        for remote in DATASETS[name]:
            target = folder / remote.name
            expected = remote.sha256 or recorded.get(remote.name)
            if target.exists() and expected and sha256_of(target) == expected:
                continue
            partial = target.with_suffix(target.suffix + ".part")
            task = progress.add_task(remote.name, total=None)
            with urllib.request.urlopen(remote.url) as response, partial.open("wb") as f:
                progress.update(task, total=int(response.headers.get("Content-Length") or 0))
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    progress.advance(task, len(chunk))
            actual = sha256_of(partial)
            if expected and actual != expected:
                partial.unlink()
                raise ValueError(f"{remote.url}: sha256 {actual} differs from pinned {expected}")
            shutil.move(partial, target)
            recorded[remote.name] = actual
    recorded_path.write_text(json.dumps(recorded, indent=2, sort_keys=True))
    return folder
