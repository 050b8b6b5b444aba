import json

import pyarrow as pa
import pytest

from contracts.schema import SCHEMA_VERSION
from training.data import storage


def _queries(n: int) -> list[dict]:
    return [
        {
            "query_id": f"q{i}",
            "query": f"text {i}",
            "query_type": "t",
            "split": "train" if i % 2 else "test",
        }
        for i in range(n)
    ]


def test_roundtrip_split_filter_and_batches(tmp_path):
    storage.write_manifest(tmp_path, source="unit", seed=1)
    storage.write_table(tmp_path, "queries", _queries(10))
    storage.append_shard(
        tmp_path,
        "judgments",
        [
            {
                "query_id": f"q{i}",
                "product_id": "p",
                "grade": i % 4,
                "grade_probs": [0.25] * 4,
                "num_raters": 1,
                "category_match": 0,
                "brand_match": 0,
                "attribute_match": 0,
            }
            for i in range(10)
        ],
    )
    assert storage.read_table(tmp_path, "queries").num_rows == 10
    test_q = storage.read_table(tmp_path, "queries", filter_split="test")
    assert set(test_q.column("split").to_pylist()) == {"test"}
    judged = storage.read_table(tmp_path, "judgments", ["query_id"], filter_split="test")
    assert sorted(judged.column("query_id").to_pylist()) == sorted(
        test_q.column("query_id").to_pylist()
    )
    sizes = [b.num_rows for b in storage.iter_batches(tmp_path, "queries", 3)]
    assert sum(sizes) == 10 and max(sizes) <= 3
    manifest = storage.read_manifest(tmp_path)
    assert manifest["counts"] == {"queries": 10, "judgments": 10}


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(storage.DatasetError, match="query"):
        storage.write_table(tmp_path, "queries", [{"query_id": "q", "split": "train"}])
    with pytest.raises(storage.DatasetError, match="missing columns"):
        storage.write_table(tmp_path, "queries", pa.table({"query_id": ["q"]}))
    storage.write_manifest(tmp_path, source="unit")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(storage.DatasetError, match="schema_version"):
        storage.read_table(tmp_path, "queries")
