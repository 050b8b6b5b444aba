from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops.cli import app
from training.data import storage
from training.data.subsets import scarce_human_labels, seeded_subset


def _splits(path: Path) -> dict[str, str]:
    table = storage.read_table(path, "queries", ["query_id", "split"]).to_pylist()
    return {q["query_id"]: q["split"] for q in table}


def test_seeded_subsets_nest_and_ignore_order():
    ids = [f"q{i}" for i in range(50)]
    small, large = seeded_subset(ids, 10, seed=1), seeded_subset(ids[::-1], 30, seed=1)
    assert len(small) == 10 and len(large) == 30
    assert small < large
    assert seeded_subset(ids, 10, seed=2) != small


def test_scarce_copy_demotes_train_queries_and_drops_their_judgments(dataset: Path, tmp_path: Path):
    out = scarce_human_labels(dataset, tmp_path / "scarce", keep_train=5, seed=0)
    before, after = _splits(dataset), _splits(out)
    assert before.keys() == after.keys()
    kept = {q for q, s in after.items() if s == "train"}
    demoted = {q for q, s in before.items() if s == "train"} - kept
    assert len(kept) == 5 and demoted
    assert all(after[q] == "unlabeled" for q in demoted)
    # Dev and test are untouched, so evaluations stay comparable with the source.
    assert {q: s for q, s in after.items() if s in ("dev", "test")} == {
        q: s for q, s in before.items() if s in ("dev", "test")
    }
    judged = set(storage.read_table(out, "judgments", ["query_id"]).column("query_id").to_pylist())
    assert judged.isdisjoint(demoted) and kept <= judged
    assert storage.read_manifest(out)["extra"]["scarce_human_labels"]["train_queries_kept"] == 5


def test_scarce_rejects_a_keep_count_beyond_the_train_split(dataset: Path, tmp_path: Path):
    result = CliRunner().invoke(
        app,
        ["data", "scarce", str(dataset), "--out", str(tmp_path / "x"), "--keep-train", "10000"],
    )
    assert result.exit_code == 2
    assert "keep_train" in result.output


def test_scarce_refuses_to_overwrite_a_directory_that_is_not_a_dataset(
    dataset: Path, tmp_path: Path
):
    keep = tmp_path / "notes.txt"
    keep.write_text("not a dataset")
    with pytest.raises(ValueError, match=r"out: .* is not a dataset"):
        scarce_human_labels(dataset, tmp_path, keep_train=5)
    assert keep.read_text() == "not a dataset"
    # An earlier derived copy is replaced.
    out = scarce_human_labels(dataset, tmp_path / "scarce", keep_train=5)
    assert scarce_human_labels(dataset, out, keep_train=6) == out
    assert sum(s == "train" for s in _splits(out).values()) == 6
