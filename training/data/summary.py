"""What a dataset holds: sizes, splits, label distribution, query types, rater agreement."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from contracts.schema import NUM_GRADES, Grade
from training.data import storage
from training.data.simulator import fleiss_kappa, majority_grade


def summarize(dataset_dir: Path | str) -> dict[str, Any]:
    manifest = storage.check_manifest(dataset_dir)
    queries = storage.read_table(dataset_dir, "queries", columns=["split", "query_type"])
    judgments = storage.read_table(
        dataset_dir, "judgments", columns=["grade", "grade_probs", "num_raters"]
    )
    grades = judgments.column("grade").to_numpy()
    shares = np.asarray(judgments.column("grade_probs").to_pylist(), dtype=float).reshape(
        -1, NUM_GRADES
    )
    raters = judgments.column("num_raters").fill_null(0).to_numpy()
    rated = raters > 1
    summary: dict[str, Any] = {
        "source": manifest["source"],
        "counts": manifest["counts"],
        "splits": dict(sorted(Counter(queries.column("split").to_pylist()).items())),
        "query_types": dict(
            Counter(str(t) for t in queries.column("query_type").to_pylist()).most_common()
        ),
        "labels": {
            Grade(g).name.lower(): round(float((grades == g).mean()), 4) if len(grades) else 0.0
            for g in range(NUM_GRADES - 1, -1, -1)
        },
    }
    if rated.any():
        votes_on_grade = shares[rated, :][np.arange(rated.sum()), grades[rated]]
        summary["raters"] = {
            "fleiss_kappa": round(fleiss_kappa(shares[rated], raters[rated]), 4),
            "mean_share_on_majority": round(float(votes_on_grade.mean()), 4),
            "unanimous": round(float((shares[rated].max(axis=1) > 0.999).mean()), 4),
            "majority_consistent": bool(
                (majority_grade(shares[rated].astype(np.float32)) == grades[rated]).all()
            ),
        }
    if "majority_matches_rules" in manifest.get("extra", {}):
        summary.setdefault("raters", {})["majority_matches_rules"] = round(
            manifest["extra"]["majority_matches_rules"], 4
        )
    return summary
