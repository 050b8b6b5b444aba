import json
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from typer.testing import CliRunner

from training import eval_cli
from training.data import storage
from training.data.simulator import simulate
from training.eval.evaluate import evaluate_scorer
from training.eval.scorer import build_scorer


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return simulate(
        tmp_path_factory.mktemp("sim"),
        num_products=500,
        num_queries=40,
        num_unlabeled=5,
        seed=11,
        show_progress=False,
    )


class Oracle:
    """Scores with the dataset's own grades: every ranking metric must be perfect."""

    name = "oracle"

    def __init__(self, dataset):
        j = storage.read_table(dataset, "judgments").to_pylist()
        q = {r["query_id"]: r["query"] for r in storage.read_table(dataset, "queries").to_pylist()}
        self.grade = {(q[r["query_id"]], r["product_id"]): r["grade"] for r in j}

    def score_pairs(self, queries: Sequence[str], products: Sequence[Mapping]) -> np.ndarray:
        return np.array(
            [self.grade[(q, p["product_id"])] for q, p in zip(queries, products, strict=True)],
            dtype=float,
        )

    def score_and_grade_probs(self, queries, products) -> tuple[np.ndarray, np.ndarray]:
        scores = self.score_pairs(queries, products)
        return scores, np.eye(4)[scores.astype(int)]


def test_oracle_is_perfect_and_teacher_correlation_reported(dataset):
    oracle = Oracle(dataset)
    result = evaluate_scorer(oracle, dataset, split="test")
    assert result["ndcg@10"] == pytest.approx(1.0)
    assert result["mrr"] == 1.0 and result["map"] == 1.0
    assert result["grade_accuracy"] == 1.0 and result["pairwise_accuracy"] == 1.0
    assert "spearman_teacher" not in result
    judgments = storage.read_table(dataset, "judgments").to_pylist()
    queries = {
        r["query_id"]: r["query"] for r in storage.read_table(dataset, "queries").to_pylist()
    }
    storage.write_table(
        dataset,
        "teacher_labels",
        [
            {
                "query_id": r["query_id"],
                "query": queries[r["query_id"]],
                "product_id": r["product_id"],
                "grade_probs": r["grade_probs"],
                "expected_score": float(np.dot(r["grade_probs"], np.arange(4))),
                "teacher_model": "raters",
                "teacher_version": "0",
            }
            for r in judgments
        ],
    )
    result = evaluate_scorer(oracle, dataset, split="test")
    assert result["spearman_teacher"] > 0.8


def test_bm25_beats_random_and_cli_prints_json(dataset):
    bm25 = evaluate_scorer(build_scorer("bm25", dataset), dataset, split="test")

    class Random:
        name = "random"

        def score_pairs(self, queries, products):
            return np.random.default_rng(0).random(len(queries))

    rand = evaluate_scorer(Random(), dataset, split="test")
    assert bm25["ndcg@10"] > rand["ndcg@10"]
    assert "grade_accuracy" not in bm25
    import typer

    app = typer.Typer()
    app.command()(eval_cli.eval_command)
    out = CliRunner().invoke(app, ["--dataset", str(dataset), "--model", "bm25", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["bm25"]["ndcg@10"] == pytest.approx(bm25["ndcg@10"])


def test_unknown_model_kind(dataset):
    with pytest.raises(ValueError, match="unknown model kind"):
        build_scorer("nope", dataset)
