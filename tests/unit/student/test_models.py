from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from training.student.checkpoint import load_model, load_student
from training.student.models import CrossEncoderStudent, TwoTowerStudent
from training.student.models.two_tower import ordinal_grade_head

PRODUCTS = [{"product_id": "a", "title": "acme sofa"}, {"product_id": "b", "title": "nova lamp"}]
QUERIES = ["acme sofa", "acme sofa"]


def _cross(base: str) -> CrossEncoderStudent:
    return CrossEncoderStudent.from_base(base, num_layers=1, max_length=16, text_fields=["title"])


def test_cross_encoder_score_is_expected_grade_plus_a_free_logit(tiny_base_model: str):
    model = _cross(tiny_base_model).eval()
    assert model.model.config.num_hidden_layers == 1
    inputs = model.tokenize(QUERIES, ["acme sofa", "nova lamp"])
    out = model(inputs)
    assert out.grade_logits.shape == (2, 4)
    expected = out.grade_logits.softmax(-1) @ torch.arange(4.0)
    # The free score logit starts with a zero bias and random weights: the initial score
    # is the expected grade plus a small random term that already passes the encoder
    # Margin-MSE's gradient.
    free = model.model.classifier
    assert free.bias[4] == 0 and free.weight[4].abs().max() > 0
    assert not torch.allclose(out.scores, expected)
    # It carries Margin-MSE's gradient undamped: a saturated grade softmax passes almost
    # none, the free logit all of it.
    with torch.no_grad():
        model.model.classifier.bias[:4] = torch.tensor([0.0, 0.0, 0.0, 30.0])
    model.zero_grad()
    model(inputs).scores.sum().backward()
    weight_grad = model.model.classifier.weight.grad
    assert weight_grad[:4].abs().max() < 1e-6 < weight_grad[4].abs().max()
    with torch.no_grad():
        model.model.classifier.bias[4] = 0.5
        shifted = model(inputs)
    free_logit = out.scores - expected
    assert torch.allclose(
        shifted.scores,
        shifted.grade_logits.softmax(-1) @ torch.arange(4.0) + free_logit + 0.5,
        atol=1e-6,
    )
    assert out.rationale_logits.shape == (2, 3, 3)


def test_cross_encoder_checkpoint_contract(tiny_base_model: str, tmp_path: Path):
    model = _cross(tiny_base_model).eval()
    model.save(tmp_path, name="ce", version="7")
    meta = json.loads((tmp_path / "student.json").read_text())
    assert meta == {
        "kind": "cross-encoder",
        "name": "ce",
        "version": "7",
        "max_length": 16,
        "text_fields": ["title"],
        "num_grades": 4,
    }
    # The exporter loads the serving model with plain transformers.
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    inputs = model.tokenize(QUERIES, ["acme sofa", "nova lamp"])
    with torch.no_grad():
        assert torch.allclose(hf(**inputs).logits[:, :4], model(inputs).grade_logits, atol=1e-5)

    scorer = load_student(tmp_path, device="cpu")
    assert scorer.name == "ce:7"
    with torch.no_grad():
        direct = model(inputs).scores.numpy()
    assert np.allclose(scorer.score_pairs(QUERIES, PRODUCTS), direct, atol=1e-5)
    scores, probs = scorer.score_and_grade_probs(QUERIES, PRODUCTS)
    assert np.allclose(scores, direct, atol=1e-5)
    assert probs.shape == (2, 4) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_two_tower_checkpoint_contract(tiny_base_model: str, tmp_path: Path, shared: bool):
    model = TwoTowerStudent.from_base(
        tiny_base_model, num_layers=1, max_length=16, text_fields=["title"], shared=shared
    )
    with torch.no_grad():
        model.scale.fill_(2.5)
        model.bias.fill_(0.25)
    assert model.shared is shared
    model.eval().save(tmp_path, name="tt", version="1")
    meta = json.loads((tmp_path / "student.json").read_text())
    assert meta["kind"] == "two-tower" and meta["pooling"] == "mean"
    assert meta["scale"] == pytest.approx(2.5) and meta["bias"] == pytest.approx(0.25)
    for tower in ("query_tower", "product_tower"):
        AutoModel.from_pretrained(tmp_path / tower)

    # Precomputed product embeddings give the same score as the full forward pass.
    inputs = model.tokenize(QUERIES, ["acme sofa", "nova lamp"])
    with torch.no_grad():
        q = model.embed_queries(inputs["query"])
        p = model.embed_products(inputs["product"])
        assert torch.allclose(q.norm(dim=-1), torch.ones(2), atol=1e-5)
        from_embeddings = model.score_embeddings(q, p)
        assert torch.allclose(from_embeddings, model(inputs).scores, atol=1e-5)

    reloaded = load_model(tmp_path)
    assert reloaded.shared is shared
    scores = load_student(tmp_path, device="cpu").score_pairs(QUERIES, PRODUCTS)
    assert np.allclose(scores, from_embeddings.numpy(), atol=1e-5)


def test_load_student_rejects_non_checkpoints(tmp_path: Path):
    with pytest.raises(ValueError, match=r"student\.json"):
        load_student(tmp_path)
    (tmp_path / "student.json").write_text(json.dumps({"kind": "gbdt"}))
    with pytest.raises(ValueError, match="gbdt"):
        load_student(tmp_path)


def test_two_tower_grade_distribution_starts_centred_on_the_score():
    head = ordinal_grade_head()
    scores = torch.tensor([-1.0, 0.2, 0.9, 1.6, 2.4, 5.0])
    probs = head(scores.unsqueeze(-1)).softmax(-1)
    assert probs.argmax(-1).tolist() == [0, 0, 1, 2, 2, 3]
    expected = probs @ torch.arange(4, dtype=torch.float32)
    # The expected grade moves with the score (a random head would not be monotone).
    assert (expected.diff() > 0).all()


@pytest.mark.parametrize("kind", ["cross-encoder", "two-tower"])
def test_bucketed_padding_changes_widths_not_scores(tiny_base_model: str, kind: str):
    """The trainer's GPU bucketing pads to a multiple of 16: same scores, fewer shapes."""
    cls = CrossEncoderStudent if kind == "cross-encoder" else TwoTowerStudent
    model = cls.from_base(tiny_base_model, num_layers=1, max_length=48, text_fields=["title"])
    model.eval()
    queries, texts = ["acme sofa", "a grey sofa"], ["acme sofa", "nova lamp with a shade"]
    plain = model.tokenize(queries, texts)
    bucketed = model.tokenize(queries, texts, pad_to_multiple_of=16)
    for tokens in (bucketed["query"], bucketed["product"]) if kind == "two-tower" else [bucketed]:
        assert tokens["input_ids"].shape[1] % 16 == 0
    with torch.no_grad():
        assert torch.allclose(model(plain).scores, model(bucketed).scores, atol=1e-5)
