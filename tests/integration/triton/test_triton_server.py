"""A real tritonserver (PyPI nvidia-pytriton) serving the CPU repository of a student."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from services.student_inference.triton_runtime import (
    TritonNotInstalledError,
    TritonServer,
    TritonSettings,
)
from training.export.exporter import export_student
from training.export.triton_repo import write_triton_repository
from training.student.models.base import cross_encoder_head

pytestmark = pytest.mark.integration

QUERY = "grey sofa"
TEXTS = [
    "three-seat grey fabric sofa with a very long description that gets truncated at 32 "
    "tokens because the student's max_length is small, and then some more words",
    "oak desk",
    "floor lamp with linen shade",
]


def _torch_scores(checkpoint: Path, texts: list[str] = TEXTS) -> tuple[np.ndarray, np.ndarray]:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint / "model")
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint / "model").eval()
    batch = tokenizer(
        [QUERY] * len(texts),
        texts,
        truncation="longest_first",
        max_length=32,
        padding=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        scores, grade_logits = cross_encoder_head(model(**batch).logits)
    return scores.numpy(), grade_logits.softmax(-1).numpy()


def _infer(
    server: TritonServer, texts: list[str], product_ids: list[str] | None = None
) -> grpcclient.InferResult:
    query = grpcclient.InferInput("query", [1], "BYTES")
    query.set_data_from_numpy(np.array([QUERY.encode()], dtype=np.object_))
    products = grpcclient.InferInput("product_text", [len(texts)], "BYTES")
    products.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    inputs = [query, products]
    if product_ids is not None:
        ids = grpcclient.InferInput("product_id", [len(product_ids)], "BYTES")
        ids.set_data_from_numpy(np.array([i.encode() for i in product_ids], dtype=np.object_))
        inputs.append(ids)
    with server.client() as client:
        return client.infer("ce", inputs)


def test_cpu_repository_serves_torch_scores_and_new_versions(
    triton_install, make_cross_encoder, tmp_path
):
    repository = tmp_path / "repo"
    first = make_cross_encoder(1)
    export_student(first, tmp_path / "v1", int8=False)
    write_triton_repository(tmp_path / "v1", repository, model_name="ce")

    with TritonServer(repository, model_control="explicit") as server:
        with server.client() as client:
            assert client.get_model_repository_index().models[0].name == "ce"
            assert not client.is_model_ready("ce")
        server.load_model("ce")
        with server.client() as client:
            config = client.get_model_config("ce").config
        assert [i.name for i in config.input] == ["query", "product_text", "product_id"]

        result = _infer(server, TEXTS)
        scores, probs = _torch_scores(first)
        assert result.get_response().model_version == "1"
        np.testing.assert_allclose(result.as_numpy("score"), scores, atol=1e-4)
        np.testing.assert_allclose(result.as_numpy("grade_probs"), probs, atol=1e-4)
        assert _infer(server, []).as_numpy("score").shape == (0,)
        # Products keyed by id are tokenized once; a changed text under the same id is
        # re-tokenized (its cached ids are keyed by the text's hash too).
        ids = ["p1", "p2", "p3"]
        np.testing.assert_allclose(_infer(server, TEXTS, ids).as_numpy("score"), scores, atol=1e-4)
        changed = [TEXTS[1], TEXTS[2], TEXTS[0]]
        changed_scores, _ = _torch_scores(first, changed)
        np.testing.assert_allclose(
            _infer(server, changed, ids).as_numpy("score"), changed_scores, atol=1e-4
        )

        second = make_cross_encoder(2)
        export_student(second, tmp_path / "v2", int8=False)
        write_triton_repository(tmp_path / "v2", repository, model_name="ce")
        server.load_model("ce")
        result = _infer(server, TEXTS)
        new_scores, _ = _torch_scores(second)
        assert result.get_response().model_version == "2"
        np.testing.assert_allclose(result.as_numpy("score"), new_scores, atol=1e-4)
        assert not np.allclose(new_scores, scores, atol=1e-4)
        pid = server.pid
    assert pid is not None and not Path(f"/proc/{pid}").exists()


def test_missing_venv_is_a_clear_error(tmp_path):
    settings = TritonSettings(triton_venv=tmp_path / "nowhere")
    with pytest.raises(TritonNotInstalledError, match="triton_runtime setup"):
        TritonServer(tmp_path, settings=settings).start()
