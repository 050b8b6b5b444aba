"""Seeded query subsets, and scarce human labels derived from a dataset.

:func:`seeded_subset` picks the queries a scaling experiment uses, so that smaller
selections are subsets of larger ones. :func:`scarce_human_labels` writes a copy of
a dataset that keeps only some train queries labeled.

Distillation pays off where human judgments are few and unlabeled queries many
(Walmart's setting). :func:`scarce_human_labels` derives that setting from any
dataset: ``keep_train`` train queries keep their judgments, the other train queries
become ``unlabeled`` (judgments dropped, so the augmentation pool grows by them) and
dev and test stay as they are. Teacher, candidate generation and students then all
read the one derived dataset, so "equal human data" holds by construction.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from contracts.schema import Split
from training.data import storage


def seeded_subset(ids: list[str], count: int, seed: int) -> set[str]:
    """The first ``count`` ids of a seeded permutation of the sorted ids.

    Sorting first makes the choice independent of table order; using one permutation
    per seed makes smaller selections subsets of larger ones, so a scaling curve
    over augmented-set sizes only ever adds data.
    """
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in order[:count]}


def scarce_human_labels(source: Path, out: Path, keep_train: int, seed: int = 0) -> Path:
    """Write ``out``: ``source`` with ``keep_train`` of its train queries still labeled.

    The source's teacher labels are not copied: they came from a teacher that saw the
    judgments this copy drops.
    """
    if out.resolve() == source.resolve():
        raise ValueError("out: must differ from the source dataset")
    # Re-deriving replaces an earlier copy; any other non-empty directory is left alone.
    if out.exists() and any(out.iterdir()) and not (out / storage.MANIFEST).exists():
        raise ValueError(f"out: {out} exists and is not a dataset; choose a new directory")
    queries = storage.read_table(source, "queries").to_pylist()
    train = [q["query_id"] for q in queries if q["split"] == Split.TRAIN]
    if not 1 <= keep_train <= len(train):
        raise ValueError(
            f"keep_train: must be in 1..{len(train)} (the train queries), got {keep_train}"
        )
    kept = seeded_subset(train, keep_train, seed)
    demoted = set(train) - kept
    for query in queries:
        if query["query_id"] in demoted:
            query["split"] = Split.UNLABELED
    judgments = storage.read_table(source, "judgments")
    manifest = storage.read_manifest(source)
    shutil.rmtree(out, ignore_errors=True)
    storage.write_manifest(
        out,
        source=manifest["source"],
        seed=manifest.get("seed"),
        extra={
            **manifest.get("extra", {}),
            "scarce_human_labels": {
                "from": str(source),
                "train_queries_kept": keep_train,
                "train_queries_demoted": len(demoted),
                "seed": seed,
            },
        },
    )
    storage.write_table(out, "products", storage.read_table(source, "products"))
    storage.write_table(out, "queries", queries)
    storage.write_table(
        out,
        "judgments",
        [j for j in judgments.to_pylist() if j["query_id"] not in demoted],
    )
    return out
