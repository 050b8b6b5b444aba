"""ONNX export: numerics against torch, dynamic axes, int8, two-tower artefacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from training.export.exporter import export_student
from training.export.onnx_export import (
    ExportAccuracyError,
    int8_spearman,
    rank_check_pairs,
    require_int8_spearman,
    session,
)
from training.student.examples import product_text
from training.student.models.base import cross_encoder_head

PAIRS = [
    ("sofa", "grey fabric sofa with three seats and removable covers"),
    ("desk lamp", "LED desk lamp"),
    ("rug", "hand-woven wool rug 160 x 230 cm in blue and white"),
    ("chair", "chair"),
    ("standing desk electric", "height adjustable electric standing desk, oak top"),
]


def _torch_cross_encoder(model_dir: Path, queries: list[str], texts: list[str]):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = tokenizer(
        queries, texts, truncation=True, max_length=48, padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        scores, grade_logits = cross_encoder_head(model(**batch).logits)
    return dict(batch), scores.numpy(), grade_logits.softmax(-1).numpy()


@pytest.fixture(scope="module")
def cross_export(cross_encoder_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    return export_student(cross_encoder_checkpoint, tmp_path_factory.mktemp("ce-export"))


def test_cross_encoder_onnx_matches_torch_on_unseen_shapes(cross_export, cross_encoder_checkpoint):
    queries, texts = (list(x) for x in zip(*PAIRS, strict=True))
    batch, scores, probs = _torch_cross_encoder(cross_encoder_checkpoint / "model", queries, texts)
    sess = session(cross_export.output_dir / "model.onnx")
    feeds = {i.name: batch[i.name].numpy() for i in sess.get_inputs()}
    onnx_scores, onnx_probs = sess.run(["score", "grade_probs"], feeds)
    assert onnx_scores.shape == (len(PAIRS),)
    np.testing.assert_allclose(onnx_scores, scores, atol=1e-4)
    np.testing.assert_allclose(onnx_probs, probs, atol=1e-4)
    assert np.all((onnx_scores >= 0) & (onnx_scores <= 3))
    # A single pair with a different padded length runs through the same graph.
    one = {name: value[:1, :5] for name, value in feeds.items()}
    assert sess.run(["score"], one)[0].shape == (1,)


def test_cross_encoder_graph_axes_are_symbolic(cross_export):
    graph = onnx.load(str(cross_export.output_dir / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]
    outputs = {o.name: o.type.tensor_type.shape.dim for o in graph.output}
    assert outputs["score"][0].dim_param == "batch" and len(outputs["score"]) == 1
    assert outputs["grade_probs"][0].dim_param == "batch"
    assert outputs["grade_probs"][1].dim_value == 4


def test_export_records_checks_within_tolerance(cross_export):
    record = json.loads((cross_export.output_dir / "export.json").read_text())
    assert {c["graph"] for c in record["checks"]} == {"model.onnx", "model.int8.onnx"}
    for check in record["checks"]:
        assert check["max_error"] <= check["tolerance"]
        assert len({tuple(shape) for shape in check["batch_shapes"]}) == 3
    assert (cross_export.output_dir / "tokenizer" / "tokenizer.json").is_file()


def test_int8_graph_is_quantized_and_close(cross_export, cross_encoder_checkpoint):
    int8_path = cross_export.output_dir / "model.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(int8_path)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul"}
    queries, texts = (list(x) for x in zip(*PAIRS, strict=True))
    batch, scores, _ = _torch_cross_encoder(cross_encoder_checkpoint / "model", queries, texts)
    sess = session(int8_path)
    int8_scores = sess.run(["score"], {i.name: batch[i.name].numpy() for i in sess.get_inputs()})[0]
    np.testing.assert_allclose(int8_scores, scores, atol=0.15)


def test_export_fails_loudly_past_the_tolerance(cross_encoder_checkpoint, tmp_path):
    with pytest.raises(ExportAccuracyError, match=r"model\.int8\.onnx: .* exceeds the tolerance"):
        export_student(cross_encoder_checkpoint, tmp_path, int8_tolerance=1e-12)


def test_invalid_spec_names_the_field(cross_encoder_checkpoint, tmp_path):
    spec = json.loads((cross_encoder_checkpoint / "student.json").read_text())
    del spec["max_length"]
    (tmp_path / "student.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="max_length"):
        export_student(tmp_path, tmp_path / "out")


def test_two_tower_export(two_tower_checkpoint, products_parquet, tmp_path):
    result = export_student(two_tower_checkpoint, tmp_path, products=products_parquet)
    query_dir = two_tower_checkpoint / "query_tower"
    tokenizer = AutoTokenizer.from_pretrained(query_dir)
    model = AutoModel.from_pretrained(query_dir).eval()
    queries = ["sofa", "a very long query about an office chair with armrests"]
    batch = tokenizer(queries, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sess = session(tmp_path / "query_tower.onnx")
    (embedding,) = sess.run(
        ["embedding"], {i.name: batch[i.name].numpy() for i in sess.get_inputs()}
    )
    np.testing.assert_allclose(embedding, expected.numpy(), atol=1e-4)

    ids = json.loads((tmp_path / "product_ids.json").read_text())
    embeddings = np.load(tmp_path / "product_embeddings.npy")
    assert ids == [f"p{i}" for i in range(5)]
    assert embeddings.shape == (5, 32) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # text_fields = [title, brand]: the product text is the trainer's, brand included.
    text = product_text({"title": "grey fabric sofa", "brand": "acme"}, ["title", "brand"])
    assert "acme" in text
    product_dir = two_tower_checkpoint / "product_tower"
    product = tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        state = AutoModel.from_pretrained(product_dir).eval()(**product).last_hidden_state
    first = torch.nn.functional.normalize(state.mean(1), dim=-1).numpy()[0]
    np.testing.assert_allclose(embeddings[0], first, atol=1e-4)
    assert json.loads((tmp_path / "scoring.json").read_text())["scale"] == 3.0
    assert result.files["product_embeddings"] == "product_embeddings.npy"


def test_two_tower_needs_products(two_tower_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="products"):
        export_student(two_tower_checkpoint, tmp_path)


def test_int8_spearman_measures_rank_agreement_and_the_gate_names_the_value(cross_export):
    out = cross_export.output_dir
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    max_length = json.loads((out / "student.json").read_text())["max_length"]
    fp32, int8 = out / "model.onnx", out / "model.int8.onnx"
    assert int8_spearman(fp32, fp32, tokenizer, max_length=max_length) == pytest.approx(1.0)
    rho = int8_spearman(fp32, int8, tokenizer, max_length=max_length)
    assert -1.0 <= rho <= 1.0
    print(f"int8 Spearman on the untrained fixture: {rho:.4f}")
    # Reversed pairs order reverses nothing: rho compares the same pairs in both graphs.
    pairs = rank_check_pairs()[::-1]
    assert int8_spearman(fp32, int8, tokenizer, max_length=max_length, pairs=pairs) == (
        pytest.approx(rho)
    )
    require_int8_spearman(0.995)
    with pytest.raises(ExportAccuracyError, match=r"Spearman's rho against fp32 = 0\.9300"):
        require_int8_spearman(0.93)
    with pytest.raises(ValueError, match="pairs"):
        int8_spearman(fp32, int8, tokenizer, max_length=max_length, pairs=pairs[:2])
