import ir_measures
import numpy as np
import pytest
from ir_measures import AP, RR, nDCG

from training.eval import metrics


@pytest.fixture(scope="module")
def random_qrels_run():
    rng = np.random.default_rng(3)
    qrels, run = {}, {}
    for q in range(40):
        docs = [f"d{i}" for i in range(int(rng.integers(5, 30)))]
        grades = rng.integers(0, 4, len(docs))
        grades[0] = 3  # every query has one relevant document
        qrels[f"q{q}"] = {d: int(g) for d, g in zip(docs, grades, strict=True)}
        run[f"q{q}"] = {d: float(s) for d, s in zip(docs, rng.random(len(docs)), strict=True)}
    return qrels, run


def _ir(measure, qrels, run, gain=None):
    qs = [
        ir_measures.Qrel(q, d, int(gain[g]) if gain else g)
        for q, docs in qrels.items()
        for d, g in docs.items()
    ]
    rs = [ir_measures.ScoredDoc(q, d, s) for q, docs in run.items() for d, s in docs.items()]
    return ir_measures.calc_aggregate([measure], qs, rs)[measure]


@pytest.mark.parametrize("k", [5, 10, 20])
def test_ndcg_matches_ir_measures(random_qrels_run, k):
    qrels, run = random_qrels_run
    assert metrics.ndcg(qrels, run, k) == pytest.approx(_ir(nDCG @ k, qrels, run), abs=1e-6)
    # NDCG is invariant to scaling gains, so ESCI gains x100 are integer trec_eval grades.
    scaled = {g: round(v * 100) for g, v in metrics.ESCI_GAINS.items()}
    assert metrics.ndcg(qrels, run, k, metrics.ESCI_GAINS) == pytest.approx(
        _ir(nDCG @ k, qrels, run, scaled), abs=1e-6
    )


@pytest.mark.parametrize("rel", [1, 2, 3])
def test_mrr_and_map_match_ir_measures(random_qrels_run, rel):
    qrels, run = random_qrels_run
    assert metrics.mrr(qrels, run, rel) == pytest.approx(_ir(RR(rel=rel), qrels, run), abs=1e-6)
    assert metrics.mean_average_precision(qrels, run, rel) == pytest.approx(
        _ir(AP(rel=rel), qrels, run), abs=1e-6
    )


def test_pairwise_and_correlation_edges():
    qrels = {"q": {"a": 3, "b": 1, "c": 0}}
    assert metrics.pairwise_accuracy(qrels, {"q": {"a": 3, "b": 2, "c": 1}}) == 1.0
    assert metrics.pairwise_accuracy(qrels, {"q": {"a": 1, "b": 2, "c": 3}}) == 0.0
    assert metrics.pairwise_accuracy(qrels, {"q": {"a": 1, "b": 1, "c": 1}}) == 0.5
    corr = metrics.rank_correlation(
        {"q": {"a": 3, "b": 2, "c": 1}}, {"q": {"a": 0.9, "b": 0.5, "c": 0.1}}
    )
    assert corr["spearman"] == pytest.approx(1.0) and corr["kendall"] == pytest.approx(1.0)


def test_grade_metrics():
    assert metrics.grade_accuracy([0, 1, 2, 3], [0, 1, 2, 0]) == 0.75
    assert metrics.grade_macro_f1([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert metrics.grade_macro_f1([0, 0, 3, 3], [0, 0, 0, 0]) < 0.5
