import re

import numpy as np
import pytest

from contracts.schema import Match
from training.data import storage
from training.data.rules import CatalogArrays, QuerySpec, judge
from training.data.simulator import (
    HARD_QUERY_TYPES,
    fleiss_kappa,
    majority_grade,
    simulate,
    simulate_raters,
    vote_shares,
)
from training.data.summary import summarize
from training.data.taxonomy import FAMILIES, PARAPHRASES, TYPE_INDEX, TYPES
from training.eval.evaluate import evaluate_scorer
from training.eval.scorer import build_scorer


def test_taxonomy_is_rich_enough():
    assert len(TYPES) >= 30
    assert len(FAMILIES) >= 5


def test_rules_grade_substitutes_and_complements():
    t = [TYPE_INDEX[n] for n in ("sofa", "sofa", "loveseat", "sofa cover", "desk")]
    catalog = CatalogArrays(
        *(
            np.array(v)
            for v in (t, [0, 1, 0, 0, 0], [0, 0, 0, 5, 0], [0] * 5, [0] * 5, [0] * 5, [0] * 5)
        )
    )
    idx = np.arange(5)
    j = judge(QuerySpec(TYPE_INDEX["sofa"], brand=0), catalog, idx)
    assert j.grade.tolist() == [3, 2, 2, 1, 0]
    assert j.brand_match.tolist()[:2] == [Match.MATCH, Match.MISMATCH]
    assert (j.attribute_match == Match.NOT_STATED).all()
    attr_only = judge(QuerySpec(attributes={"color": 0, "material": 0}), catalog, idx)
    assert attr_only.grade.tolist() == [3, 3, 3, 2, 3]
    assert (attr_only.category_match == Match.NOT_STATED).all()


def test_deterministic_and_splits_disjoint(dataset, tmp_path):
    again = simulate(
        tmp_path, num_products=600, num_queries=60, num_unlabeled=20, seed=7, show_progress=False
    )
    for name in ("products", "queries", "judgments"):
        assert storage.read_table(dataset, name).equals(storage.read_table(again, name))
    queries = storage.read_table(dataset, "queries").to_pylist()
    texts = [q["query"].lower() for q in queries]
    assert len(set(texts)) == len(texts)
    assert {q["split"] for q in queries} == {"train", "dev", "test", "unlabeled"}
    judged = set(storage.read_table(dataset, "judgments").column("query_id").to_pylist())
    unlabeled = {q["query_id"] for q in queries if q["split"] == "unlabeled"}
    assert not judged & unlabeled
    assert len({q["query_type"] for q in queries}) >= 6


def test_every_labeled_query_has_a_graded_pool(dataset):
    judgments = storage.read_table(dataset, "judgments").to_pandas()
    per_query = judgments.groupby("query_id")
    assert per_query.size().between(15, 40).all()
    assert (per_query["grade"].max() == 3).mean() > 0.9
    assert set(judgments["grade"]) == {0, 1, 2, 3}
    probs = np.stack(judgments["grade_probs"].to_numpy())
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (np.argmax(probs, axis=1) == judgments["grade"]).mean() > 0.95


def test_titles_carry_the_truth(dataset):
    products = storage.read_table(dataset, "products").to_pylist()
    brands_in_title = np.mean([p["brand"] in p["title"] for p in products])
    assert brands_in_title == 1.0


def test_rater_noise_lowers_agreement():
    grades = np.random.default_rng(0).integers(0, 4, 4000)
    kappas = []
    for noise in (0.0, 0.2, 0.5):
        shares = vote_shares(simulate_raters(grades, 5, noise, np.random.default_rng(1)))
        kappas.append(fleiss_kappa(shares, np.full(len(grades), 5)))
        if noise == 0.0:
            assert (majority_grade(shares) == grades).all()
    assert kappas[0] == pytest.approx(1.0) and kappas[0] > kappas[1] > kappas[2]


def test_summary_reports_labels_types_and_agreement(dataset):
    summary = summarize(dataset)
    assert sum(summary["labels"].values()) == pytest.approx(1.0, abs=1e-3)
    assert 0.0 < summary["raters"]["fleiss_kappa"] < 1.0
    assert summary["splits"]["unlabeled"] == 20
    assert sum(summary["query_types"].values()) == 80


def test_rules_grade_negations_and_brand_alternatives():
    sofa, loveseat = TYPE_INDEX["sofa"], TYPE_INDEX["loveseat"]
    # Products: sofa brand 0 material 0, sofa brand 1 material 2, loveseat brand 1 material 0.
    catalog = CatalogArrays(
        *(np.array(v) for v in ([sofa, sofa, loveseat], [0, 1, 1], [0] * 3, [0, 2, 0], [0] * 3)),
        np.zeros(3, int),
        np.zeros(3, int),
    )
    idx = np.arange(3)
    not_material_0 = judge(QuerySpec(sofa, excluded_attributes={"material": 0}), catalog, idx)
    assert not_material_0.grade.tolist() == [2, 3, 0]
    assert not_material_0.attribute_match.tolist() == [Match.MISMATCH, Match.MATCH, Match.MISMATCH]
    not_brand_0 = judge(QuerySpec(sofa, excluded_brand=0), catalog, idx)
    assert not_brand_0.grade.tolist() == [2, 3, 2]
    assert not_brand_0.brand_match.tolist() == [Match.MISMATCH, Match.MATCH, Match.MATCH]
    with pytest.raises(ValueError, match="not both"):
        QuerySpec(sofa, brand=0, excluded_brand=1)


@pytest.fixture(scope="module")
def hard_dataset(tmp_path_factory: pytest.TempPathFactory):
    return simulate(
        tmp_path_factory.mktemp("hard"),
        num_products=600,
        num_queries=60,
        num_unlabeled=20,
        seed=7,
        show_progress=False,
        profile="hard",
    )


def test_hard_profile_writes_queries_lexical_matching_gets_wrong(dataset, hard_dataset):
    queries = storage.read_table(hard_dataset, "queries").to_pylist()
    kinds = {q["query_type"] for q in queries}
    assert set(HARD_QUERY_TYPES) <= kinds
    paraphrases = [q["query"] for q in queries if q["query_type"] == "paraphrase"]
    phrases = {phrase: name for name, options in PARAPHRASES.items() for phrase in options}
    assert paraphrases and all(any(p.endswith(ph) for ph in phrases) for p in paraphrases)
    # A paraphrase never names its own type (it may name another one, to mislead).
    assert not any(name in phrase for phrase, name in phrases.items())
    negations = [q["query"] for q in queries if q["query_type"] == "negation"]
    assert all(re.search(r"\b(not|without|non|no)\b", q) for q in negations)
    judgments = storage.read_table(hard_dataset, "judgments").to_pandas()
    assert (judgments.groupby("query_id")["grade"].max() == 3).mean() > 0.9
    assert storage.read_manifest(hard_dataset)["extra"]["profile"] == "hard"
    # The point of the profile: BM25 ranks it clearly worse than the standard data.
    bm25 = {
        name: evaluate_scorer(build_scorer("bm25", path), path, split="train")["ndcg@10"]
        for name, path in (("standard", dataset), ("hard", hard_dataset))
    }
    assert bm25["hard"] < bm25["standard"] - 0.05, bm25


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="profile must be one of"):
        simulate(tmp_path, num_products=50, num_queries=5, profile="nightmare")
