"""ONNX export of student encoders, checked numerically against torch.

The graphs compute the serving outputs themselves, so every runtime (Triton's ONNX
Runtime backend, the Python backend, a plain ``onnxruntime`` session) returns the same
numbers without re-implementing the head:

* cross-encoder: ``score`` [batch] (expected grade sum_g p(g) * g plus the free score
  logit, ``training.student.models.base.cross_encoder_head``) and ``grade_probs``
  [batch, 4] (softmax of the grade logits);
* query tower: ``embedding`` [batch, hidden], L2-normalised mean pooling over the
  attention mask.

Known pitfall with torch 2.13 + transformers 5: the dynamo exporter and SDPA attention
produce graphs that ONNX Runtime cannot fuse and that int8 dynamic quantization
mishandles, so the models load with ``attn_implementation="eager"`` and export with the
TorchScript exporter (``dynamo=False``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model
from scipy.stats import spearmanr
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from contracts import schema
from training.student.models.base import CROSS_ENCODER_LABELS, cross_encoder_head

OPSET = 17
# Order of the graph inputs; a model whose tokenizer has no token types (DistilBERT,
# RoBERTa-like) simply has no ``token_type_ids`` input.
_INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")

# fp32 ONNX vs torch: both run the same float32 arithmetic, differences come from
# kernel ordering and ONNX Runtime's fused attention/LayerNorm, well below 1e-4.
FP32_TOLERANCE = 1e-4
# int8 dynamic quantization: expected grade within 0.15 of torch on a 0..3 scale
# (5% of the range); query embeddings keep cosine >= 0.98 with torch's.
INT8_SCORE_TOLERANCE = 0.15
INT8_COSINE_TOLERANCE = 0.02

# (query, product text) pairs of varied lengths for the numeric checks; they are split
# into batches of different sizes and padded lengths so the check also proves that the
# batch and sequence axes are dynamic.
CHECK_PAIRS: tuple[tuple[str, str], ...] = (
    ("sofa", "Three-seat fabric sofa in grey"),
    ("red running shoes men size 10", "Men's lightweight running shoe, red, mesh upper"),
    ("usb c cable", "USB-C to USB-C charging cable 2 m braided nylon, 100 W"),
    ("oak dining table", "Solid oak extendable dining table for six to eight people"),
    ("wireless mouse", "Ergonomic wireless mouse with silent clicks"),
    (
        "kids bike helmet",
        "Adjustable children's bicycle helmet with LED rear light, ventilation channels "
        "and a magnetic buckle, suitable for ages 3 to 8",
    ),
    ("coffee grinder burr", "Electric burr coffee grinder, 40 grind settings"),
    ("desk lamp", "Garden hose 30 m"),
)


class ExportAccuracyError(RuntimeError):
    """An exported graph disagrees with torch beyond the stated tolerance."""


@dataclass(frozen=True)
class AccuracyCheck:
    """How far an exported graph is from torch on :data:`CHECK_PAIRS`."""

    graph: str
    metric: str
    max_error: float
    tolerance: float
    batch_shapes: tuple[tuple[int, int], ...]

    def raise_if_exceeded(self) -> None:
        if not self.max_error <= self.tolerance:
            raise ExportAccuracyError(
                f"{self.graph}: {self.metric} = {self.max_error:.3g} exceeds the tolerance "
                f"{self.tolerance:.3g} on batches {list(self.batch_shapes)}"
            )


class CrossEncoderGraph(nn.Module):
    """A sequence classifier with the relevance head: logits -> (score, grade_probs)."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(**dict(zip(self.input_names, inputs, strict=True))).logits
        score, grade_logits = cross_encoder_head(logits)
        return score, grade_logits.float().softmax(-1)


class MeanPoolingEncoder(nn.Module):
    """An encoder with mean pooling over the attention mask and L2 normalisation."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.input_names, inputs, strict=True))
        hidden = self.model(**named).last_hidden_state.float()
        mask = named["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=-1)


def input_names(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    return tuple(name for name in _INPUT_ORDER if name in tokenizer.model_input_names)


def load_cross_encoder(model_dir: Path) -> tuple[CrossEncoderGraph, PreTrainedTokenizerBase]:
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager"
    )
    if model.config.num_labels not in (CROSS_ENCODER_LABELS, schema.NUM_GRADES):
        raise ValueError(
            f"{model_dir}: num_labels={model.config.num_labels}, expected "
            f"{CROSS_ENCODER_LABELS} (grades + free score logit)"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    graph = CrossEncoderGraph(model, input_names(tokenizer)).eval()
    return graph, tokenizer


def load_mean_pooling_encoder(
    model_dir: Path,
) -> tuple[MeanPoolingEncoder, PreTrainedTokenizerBase]:
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    graph = MeanPoolingEncoder(model, input_names(tokenizer)).eval()
    return graph, tokenizer


def _export(
    graph: nn.Module,
    names: Sequence[str],
    example: dict[str, torch.Tensor],
    outputs: dict[str, dict[int, str]],
    path: Path,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic_axes.update(outputs)
    with torch.inference_mode(), warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice; dynamo=False is deliberate
        # (see the module docstring).
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            graph,
            tuple(example[name] for name in names),
            str(path),
            input_names=list(names),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export_cross_encoder(model_dir: Path, path: Path, *, max_length: int) -> CrossEncoderGraph:
    """Write the cross-encoder at ``model_dir`` to ``path``; returns the torch graph."""
    graph, tokenizer = load_cross_encoder(model_dir)
    queries, texts = zip(*CHECK_PAIRS[:2], strict=True)
    example = tokenizer(
        list(queries),
        list(texts),
        truncation="longest_first",
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )
    outputs = {"score": {0: "batch"}, "grade_probs": {0: "batch"}}
    _export(graph, graph.input_names, dict(example), outputs, path)
    return graph


def export_mean_pooling_encoder(
    model_dir: Path, path: Path, *, max_length: int
) -> MeanPoolingEncoder:
    """Write the (query) encoder at ``model_dir`` to ``path``; returns the torch graph."""
    graph, tokenizer = load_mean_pooling_encoder(model_dir)
    example = tokenizer(
        [q for q, _ in CHECK_PAIRS[:2]],
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )
    _export(graph, graph.input_names, dict(example), {"embedding": {0: "batch"}}, path)
    return graph


def fuse_attention(path: Path, model_dir: Path) -> None:
    """Rewrites the BERT-style encoder graph at ``path`` with ONNX Runtime's transformer
    fusions (one ``Attention`` op per layer, ``EmbedLayerNormalization``), in place.

    The query tower runs one short query per request, where the unfused graph's ~240
    small ops (reshapes, transposes, the mask arithmetic) cost as much as a third of
    its matmuls; fused, the int8 tower takes ~10 % less CPU per query (docs/triton.md).
    Session-time optimisation cannot do this: it needs the head count from the config.
    """
    config = AutoConfig.from_pretrained(model_dir)
    fused = optimize_model(
        str(path),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    fused.save_model_to_file(str(path))


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization of the MatMul/Gemm weights, for CPU serving.

    Per output channel: one scale per column keeps the MiniLM query tower within
    1 - cos = 0.01 of fp32 where one scale per tensor gave 0.04 (over the 0.02
    tolerance), at the same speed (docs/triton.md).
    """
    quantize_dynamic(
        source,
        target,
        weight_type=QuantType.QInt8,
        per_channel=True,
        # Fused graphs (fuse_attention) hold com.microsoft ops that ONNX shape inference
        # cannot type; their outputs are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return target


def session(path: Path, *, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_batches(
    tokenizer: PreTrainedTokenizerBase, max_length: int, *, pairs: bool
) -> list[dict[str, torch.Tensor]]:
    """Batches of 1, 3 and all check pairs: distinct batch sizes and padded lengths."""
    batches = []
    for start, stop in ((0, 1), (1, 4), (0, len(CHECK_PAIRS))):
        queries = [q for q, _ in CHECK_PAIRS[start:stop]]
        texts = [t for _, t in CHECK_PAIRS[start:stop]]
        encoded = tokenizer(
            queries,
            texts if pairs else None,
            truncation="longest_first" if pairs else True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        batches.append(dict(encoded))
    return batches


def check_cross_encoder(
    graph: CrossEncoderGraph,
    tokenizer: PreTrainedTokenizerBase,
    onnx_path: Path,
    *,
    max_length: int,
    tolerance: float,
) -> AccuracyCheck:
    """Max |score| and |grade_probs| difference between ``onnx_path`` and torch."""

    def torch_outputs(batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        score, probs = graph(*(batch[n] for n in graph.input_names))
        return [score.numpy(), probs.numpy()]

    def max_abs(reference: list[np.ndarray], exported: list[np.ndarray]) -> float:
        return max(float(np.abs(r - e).max()) for r, e in zip(reference, exported, strict=True))

    return _compare(
        graph.input_names,
        _check_batches(tokenizer, max_length, pairs=True),
        torch_outputs,
        onnx_path,
        max_abs,
        metric="max |score, grade_probs difference|",
        tolerance=tolerance,
    )


def check_mean_pooling_encoder(
    graph: MeanPoolingEncoder,
    tokenizer: PreTrainedTokenizerBase,
    onnx_path: Path,
    *,
    max_length: int,
    tolerance: float,
    metric: str = "max_abs",
) -> AccuracyCheck:
    """Max |embedding| difference (``max_abs``) or max (1 - cosine) (``cosine``)."""

    def torch_outputs(batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        return [graph(*(batch[n] for n in graph.input_names)).numpy()]

    def error(reference: list[np.ndarray], exported: list[np.ndarray]) -> float:
        if metric == "cosine":
            return float((1.0 - (reference[0] * exported[0]).sum(-1)).max())
        return float(np.abs(reference[0] - exported[0]).max())

    return _compare(
        graph.input_names,
        _check_batches(tokenizer, max_length, pairs=False),
        torch_outputs,
        onnx_path,
        error,
        metric="max (1 - cosine) of embeddings" if metric == "cosine" else "max |embedding diff|",
        tolerance=tolerance,
    )


def _compare(
    names: Sequence[str],
    batches: list[dict[str, torch.Tensor]],
    torch_outputs: Callable[[dict[str, torch.Tensor]], list[np.ndarray]],
    onnx_path: Path,
    error: Callable[[list[np.ndarray], list[np.ndarray]], float],
    *,
    metric: str,
    tolerance: float,
) -> AccuracyCheck:
    sess = session(onnx_path)
    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            reference = torch_outputs(batch)
            exported = sess.run(None, {n: batch[n].numpy().astype(np.int64) for n in names})
            worst = max(worst, error(reference, exported))
    return AccuracyCheck(
        graph=onnx_path.name,
        metric=metric,
        max_error=worst,
        tolerance=tolerance,
        batch_shapes=tuple(tuple(b["input_ids"].shape) for b in batches),
    )


# int8 is served only when it ranks products as fp32 does: Spearman's rho between the
# two graphs' scores on :func:`rank_check_pairs` (every check query against every check
# text) must reach this. An absolute-error bound alone let a 0.22 rho through.
INT8_MIN_SPEARMAN = 0.99


def rank_check_pairs() -> list[tuple[str, str]]:
    """Every check query paired with every check text: relevant and irrelevant pairs."""
    return [(q, t) for q, _ in CHECK_PAIRS for _, t in CHECK_PAIRS]


def int8_spearman(
    fp32_path: Path,
    int8_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> float:
    """Spearman's rho between the fp32 and int8 cross-encoder graphs' scores on ``pairs``.

    Runs both graphs with ONNX Runtime (no torch model needed), so the controller's
    promotion gate can call it on any export. ``pairs`` defaults to
    :func:`rank_check_pairs`.
    """
    chosen = list(pairs) if pairs is not None else rank_check_pairs()
    if len(chosen) < 3:
        raise ValueError(f"pairs: Spearman's rho needs at least 3 pairs, got {len(chosen)}")
    encoded = tokenizer(
        [q for q, _ in chosen],
        [t for _, t in chosen],
        truncation="longest_first",
        max_length=max_length,
        padding=True,
        return_tensors="np",
    )
    scores = []
    for path in (fp32_path, int8_path):
        sess = session(path)
        names = [i.name for i in sess.get_inputs()]
        (score,) = sess.run(["score"], {n: encoded[n].astype(np.int64) for n in names})
        scores.append(score.astype(np.float64))
    rho = float(spearmanr(scores[0], scores[1]).statistic)
    # Constant scores have no ranking to keep: nan counts as a failed check.
    return rho if np.isfinite(rho) else 0.0


def require_int8_spearman(rho: float, minimum: float = INT8_MIN_SPEARMAN) -> None:
    """Refuse an int8 graph whose ranking disagrees with fp32's."""
    if not rho >= minimum:
        raise ExportAccuracyError(
            f"int8: Spearman's rho against fp32 = {rho:.4f} is below the required "
            f"{minimum} (int8_min_spearman); serve fp32 or re-export without int8"
        )
