"""Triton model repository layout and configs, parsed with Triton's ModelConfig schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from contracts.artifacts import read_student_spec
from training.export.exporter import export_student
from training.export.onnx_export import INT8_MIN_SPEARMAN, ExportAccuracyError
from training.export.triton_repo import (
    read_config,
    recorded_int8_spearman,
    write_triton_repository,
)


@pytest.fixture(scope="module")
def export_dir(cross_encoder_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_student(cross_encoder_checkpoint, tmp_path_factory.mktemp("export")).output_dir


def _io(config: mc.ModelConfig) -> dict[str, tuple[int, list[int]]]:
    tensors = [*config.input, *config.output]
    return {t.name: (t.data_type, list(t.dims)) for t in tensors}


EXTERNAL = {
    "query": (mc.TYPE_STRING, [1]),
    "product_text": (mc.TYPE_STRING, [-1]),
    "product_id": (mc.TYPE_STRING, [-1]),
    "score": (mc.TYPE_FP32, [-1]),
    "grade_probs": (mc.TYPE_FP32, [-1, 4]),
}


def assert_drops_expired_requests(config: mc.ModelConfig) -> None:
    """Queued requests past their (overridable) timeout are rejected, not computed."""
    policy = config.dynamic_batching.default_queue_policy
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds > 0
    assert policy.allow_timeout_override


def test_cpu_repository_is_versioned_python_model(export_dir, tmp_path):
    assert write_triton_repository(export_dir, tmp_path, model_name="ce") == 1
    config = read_config(tmp_path / "ce" / "config.pbtxt")
    assert config.name == "ce" and config.backend == "python" and config.max_batch_size == 0
    assert _io(config) == EXTERNAL
    assert [i.name for i in config.input if i.optional] == ["product_id"]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert_drops_expired_requests(config)
    files = {p.name for p in (tmp_path / "ce" / "1").iterdir()}
    assert files == {
        "model.py",
        "pair_tokens.py",
        "model.onnx",
        "tokenizer.json",
        "serving.json",
        "student.json",
    }
    serving = json.loads((tmp_path / "ce" / "1" / "serving.json").read_text())
    assert serving["max_length"] == 48
    assert serving["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]

    assert write_triton_repository(export_dir, tmp_path, model_name="ce", version=2) == 2
    assert sorted(p.name for p in (tmp_path / "ce").iterdir()) == ["1", "2", "config.pbtxt"]


def test_cpu_int8_repository_serves_the_quantized_graph(export_dir, tmp_path):
    # The untrained fixture's int8 graph does not keep fp32's ranking: refused by default,
    # the error naming the value the export measured.
    rho = recorded_int8_spearman(export_dir)
    assert rho < INT8_MIN_SPEARMAN
    with pytest.raises(ExportAccuracyError, match=f"Spearman's rho against fp32 = {rho:.4f}"):
        write_triton_repository(export_dir, tmp_path, model_name="ce", precision="int8")
    assert not (tmp_path / "ce").exists()
    write_triton_repository(
        export_dir, tmp_path, model_name="ce", precision="int8", int8_min_spearman=rho
    )
    copied = (tmp_path / "ce" / "1" / "model.onnx").read_bytes()
    assert copied == (export_dir / "model.int8.onnx").read_bytes()


def test_gpu_repository_is_an_ensemble(export_dir, tmp_path):
    write_triton_repository(export_dir, tmp_path, variant="gpu", model_name="ce", max_batch_size=32)
    ensemble = read_config(tmp_path / "ce" / "config.pbtxt")
    assert ensemble.platform == "ensemble" and _io(ensemble) == EXTERNAL
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["ce_tokenizer", "ce_onnx"]
    assert dict(steps[1].output_map) == {"score": "score", "grade_probs": "grade_probs"}
    # student-inference reads the served version's spec and tokenizer from <name>/<version>.
    assert read_student_spec(tmp_path / "ce" / "1") == read_student_spec(export_dir)
    assert (tmp_path / "ce" / "1" / "tokenizer.json").is_file()

    onnx_model = read_config(tmp_path / "ce_onnx" / "config.pbtxt")
    assert onnx_model.platform == "onnxruntime_onnx" and onnx_model.max_batch_size == 32
    assert onnx_model.HasField("dynamic_batching")
    assert_drops_expired_requests(onnx_model)
    assert onnx_model.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert [i.name for i in onnx_model.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert (tmp_path / "ce_onnx" / "1" / "model.onnx").is_file()

    tokenizer = read_config(tmp_path / "ce_tokenizer" / "config.pbtxt")
    assert tokenizer.backend == "python"
    # Every tensor one step produces is one the next step consumes.
    assert {o.name for o in tokenizer.output} == {i.name for i in onnx_model.input}
    assert (tmp_path / "ce_tokenizer" / "1" / "model.py").is_file()


def test_two_tower_export_is_rejected(two_tower_checkpoint, products_parquet, tmp_path):
    export_student(two_tower_checkpoint, tmp_path / "tt", products=products_parquet, int8=False)
    with pytest.raises(ValueError, match="kind='two-tower'"):
        write_triton_repository(tmp_path / "tt", tmp_path / "repo")


def test_bad_model_name_is_rejected(export_dir, tmp_path):
    with pytest.raises(ValueError, match="model_name"):
        write_triton_repository(export_dir, tmp_path, model_name="a/b")
