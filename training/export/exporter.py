"""`relkd student export`: a student checkpoint -> checked ONNX artefacts.

The output directory's files are the export contract in ``contracts.artifacts``;
``export.json`` records what was written and the accuracy checks.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from rich.progress import Progress
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from contracts.artifacts import (
    CROSS_ENCODER_DIR,
    CROSS_ENCODER_INT8,
    CROSS_ENCODER_ONNX,
    EXPORT_JSON,
    PRODUCT_EMBEDDINGS,
    PRODUCT_IDS,
    PRODUCT_TOWER_DIR,
    QUERY_TOWER_DIR,
    QUERY_TOWER_INT8,
    QUERY_TOWER_ONNX,
    SCORING_JSON,
    STUDENT_JSON,
    TOKENIZER_DIR,
    TOKENIZER_JSON,
    CrossEncoderSpec,
    TwoTowerSpec,
    read_student_spec,
    write_student_spec,
)
from training.export import onnx_export
from training.student.examples import product_text


@dataclass
class ExportResult:
    output_dir: Path
    spec: CrossEncoderSpec | TwoTowerSpec
    files: dict[str, str] = field(default_factory=dict)
    checks: list[onnx_export.AccuracyCheck] = field(default_factory=list)
    # Spearman's rho of the int8 cross-encoder's scores against fp32's; Triton
    # repositories refuse to serve int8 below onnx_export.INT8_MIN_SPEARMAN.
    int8_spearman: float | None = None

    def write(self) -> Path:
        path = self.output_dir / EXPORT_JSON
        record = {
            "kind": self.spec.kind,
            "name": self.spec.name,
            "version": self.spec.version,
            "files": self.files,
            "checks": [asdict(check) for check in self.checks],
            "int8_spearman": self.int8_spearman,
        }
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    # transformers' mask helpers branch on tensor shapes while tracing; the branch
    # taken is the right one for every shape, which the multi-shape check verifies.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        yield


def export_student(
    checkpoint: Path,
    output_dir: Path,
    *,
    int8: bool = True,
    products: Path | None = None,
    fp32_tolerance: float = onnx_export.FP32_TOLERANCE,
    int8_tolerance: float | None = None,
    batch_size: int = 64,
) -> ExportResult:
    """Export ``checkpoint``; raises :class:`ExportAccuracyError` past a tolerance.

    ``products`` (a Parquet file or directory with the PRODUCTS schema) is required
    for a two-tower student: its product embeddings are precomputed here.
    """
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    spec = read_student_spec(checkpoint)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(output_dir=output_dir, spec=spec)
    with _quiet_tracing():
        if isinstance(spec, CrossEncoderSpec):
            _export_cross_encoder(checkpoint, spec, result, int8, fp32_tolerance, int8_tolerance)
        else:
            if products is None:
                raise ValueError("products: a two-tower export needs the products table")
            _export_two_tower(
                checkpoint, spec, result, int8, fp32_tolerance, int8_tolerance, products, batch_size
            )
    write_student_spec(spec, output_dir)
    result.files["spec"] = STUDENT_JSON
    result.write()
    return result


def _export_cross_encoder(
    checkpoint: Path,
    spec: CrossEncoderSpec,
    result: ExportResult,
    int8: bool,
    fp32_tolerance: float,
    int8_tolerance: float | None,
) -> None:
    model_dir = checkpoint / CROSS_ENCODER_DIR
    fp32_path = result.output_dir / CROSS_ENCODER_ONNX
    graph = onnx_export.export_cross_encoder(model_dir, fp32_path, max_length=spec.max_length)
    tokenizer = _save_tokenizer(model_dir, result)
    result.files["onnx"] = CROSS_ENCODER_ONNX

    def check(path: Path, tolerance: float) -> None:
        outcome = onnx_export.check_cross_encoder(
            graph, tokenizer, path, max_length=spec.max_length, tolerance=tolerance
        )
        result.checks.append(outcome)
        outcome.raise_if_exceeded()

    check(fp32_path, fp32_tolerance)
    if int8:
        int8_path = onnx_export.quantize_int8(fp32_path, result.output_dir / CROSS_ENCODER_INT8)
        result.files["onnx_int8"] = CROSS_ENCODER_INT8
        check(int8_path, int8_tolerance or onnx_export.INT8_SCORE_TOLERANCE)
        # Recorded, not enforced here: an untrained or barely trained student has no
        # ranking to keep; serving int8 is what the rank check gates (triton_repo).
        result.int8_spearman = onnx_export.int8_spearman(
            fp32_path, int8_path, tokenizer, max_length=spec.max_length
        )


def _export_two_tower(
    checkpoint: Path,
    spec: TwoTowerSpec,
    result: ExportResult,
    int8: bool,
    fp32_tolerance: float,
    int8_tolerance: float | None,
    products: Path,
    batch_size: int,
) -> None:
    query_dir = checkpoint / QUERY_TOWER_DIR
    fp32_path = result.output_dir / QUERY_TOWER_ONNX
    graph = onnx_export.export_mean_pooling_encoder(
        query_dir, fp32_path, max_length=spec.max_length
    )
    onnx_export.fuse_attention(fp32_path, query_dir)
    tokenizer = _save_tokenizer(query_dir, result)
    result.files["onnx"] = QUERY_TOWER_ONNX

    def check(path: Path, tolerance: float, metric: str) -> None:
        outcome = onnx_export.check_mean_pooling_encoder(
            graph, tokenizer, path, max_length=spec.max_length, tolerance=tolerance, metric=metric
        )
        result.checks.append(outcome)
        outcome.raise_if_exceeded()

    check(fp32_path, fp32_tolerance, "max_abs")
    if int8:
        int8_path = onnx_export.quantize_int8(fp32_path, result.output_dir / QUERY_TOWER_INT8)
        result.files["onnx_int8"] = QUERY_TOWER_INT8
        check(int8_path, int8_tolerance or onnx_export.INT8_COSINE_TOLERANCE, "cosine")

    ids, embeddings = product_embeddings(
        checkpoint / PRODUCT_TOWER_DIR, products, spec, batch_size=batch_size
    )
    np.save(result.output_dir / PRODUCT_EMBEDDINGS, embeddings)
    (result.output_dir / PRODUCT_IDS).write_text(json.dumps(ids) + "\n")
    (result.output_dir / SCORING_JSON).write_text(
        json.dumps({"scale": spec.scale, "bias": spec.bias, "pooling": spec.pooling}) + "\n"
    )
    result.files.update(
        product_embeddings=PRODUCT_EMBEDDINGS, product_ids=PRODUCT_IDS, scoring=SCORING_JSON
    )


def _save_tokenizer(model_dir: Path, result: ExportResult) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    target = result.output_dir / TOKENIZER_DIR
    if target.exists():
        shutil.rmtree(target)
    tokenizer.save_pretrained(target)
    if not (target / TOKENIZER_JSON).is_file():
        raise ValueError(
            f"{model_dir}: the tokenizer has no fast (tokenizer.json) form, which the "
            "Triton models need"
        )
    result.files["tokenizer"] = TOKENIZER_DIR
    return tokenizer


def product_embeddings(
    tower_dir: Path,
    products: Path,
    spec: TwoTowerSpec,
    *,
    batch_size: int = 64,
) -> tuple[list[str], np.ndarray]:
    """(product ids, [n, hidden] L2-normalised embeddings) of the products table."""
    table = pq.read_table(products, columns=["product_id", *dict.fromkeys(spec.text_fields)])
    missing = {"product_id", *spec.text_fields} - set(table.column_names)
    if missing:
        raise ValueError(f"{products}: missing product columns {sorted(missing)}")
    rows = table.to_pylist()
    ids = [row["product_id"] for row in rows]
    texts = [product_text(row, spec.text_fields) for row in rows]
    graph, tokenizer = onnx_export.load_mean_pooling_encoder(tower_dir)
    hidden = graph.model.config.hidden_size
    chunks: list[np.ndarray] = []
    with torch.inference_mode(), Progress(transient=True) as progress:
        task = progress.add_task("product embeddings", total=len(texts))
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=spec.max_length,
                padding=True,
                return_tensors="pt",
            )
            chunks.append(graph(*(batch[n] for n in graph.input_names)).numpy())
            progress.advance(task, len(chunks[-1]))
    embeddings = (
        np.concatenate(chunks) if chunks else np.zeros((0, hidden), dtype=np.float32)
    ).astype(np.float32)
    return ids, embeddings
