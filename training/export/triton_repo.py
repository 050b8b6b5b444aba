"""Triton model repositories for an exported cross-encoder student.

External interface, identical in both variants (no batch dimension; one request scores
one query's products, ``max_batch_size: 0``):

=============  ========  ========  ==============================================
tensor         datatype  dims      meaning
=============  ========  ========  ==============================================
query          BYTES     [1]       the query (UTF-8)
product_text   BYTES     [-1]      one product text per candidate
product_id     BYTES     [-1]      optional: one product id per candidate
score          FP32      [-1]      grade units (expected grade + score logit)
grade_probs    FP32      [-1, 4]   grade distribution (index = grade), per candidate
=============  ========  ========  ==============================================

* ``cpu``: one Python-backend model ``<name>`` (tokenizers + onnxruntime inside), for
  a CPU-only Triton such as the PyPI one, which has no ONNX Runtime backend;
* ``gpu``: ensemble ``<name>`` = ``<name>_tokenizer`` (Python backend, CPU) ->
  ``<name>_onnx`` (``onnxruntime_onnx`` on KIND_GPU with dynamic batching).

Every model is versioned: ``<model>/config.pbtxt`` and ``<model>/<version>/...``. Writing
another export into the same repository adds a version directory; a Triton in explicit
model-control mode serves it after ``load_model(<name>)`` (version policy: latest).
"""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path

from google.protobuf import text_format
from transformers import AutoTokenizer
from tritonclient.grpc import model_config_pb2 as mc

from contracts import schema
from contracts.artifacts import (
    CROSS_ENCODER_INT8,
    CROSS_ENCODER_ONNX,
    EXPORT_JSON,
    EXPORT_TOKENIZER,
    SERVING_JSON,
    STUDENT_JSON,
    TOKENIZER_DIR,
    TOKENIZER_JSON,
    TRITON_ONNX,
    CrossEncoderSpec,
    Precision,
    Variant,
    read_student_spec,
)
from training.export.onnx_export import (
    INT8_MIN_SPEARMAN,
    ExportAccuracyError,
    input_names,
    require_int8_spearman,
)

CONFIG_PBTXT = "config.pbtxt"
# Pair assembly from cached product ids, imported by both Python-backend models.
PAIR_TOKENS = "pair_tokens.py"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def read_config(path: Path) -> mc.ModelConfig:
    """Parse a ``config.pbtxt`` with Triton's own ``ModelConfig`` schema."""
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def _write_config(model_dir: Path, config: mc.ModelConfig) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG_PBTXT).write_text(text_format.MessageToString(config))


def _tensor(name: str, dtype: int, dims: list[int], **kwargs: object) -> dict[str, object]:
    return {"name": name, "data_type": dtype, "dims": dims, **kwargs}


def _external_inputs() -> list[mc.ModelInput]:
    return [
        mc.ModelInput(**_tensor("query", mc.TYPE_STRING, [1])),
        mc.ModelInput(**_tensor("product_text", mc.TYPE_STRING, [-1])),
        # Keys the product token cache (products are tokenized once); optional so
        # callers that send only texts still work (the text then keys the cache).
        mc.ModelInput(**_tensor("product_id", mc.TYPE_STRING, [-1], optional=True)),
    ]


def _external_outputs() -> list[mc.ModelOutput]:
    return [
        mc.ModelOutput(**_tensor("score", mc.TYPE_FP32, [-1])),
        mc.ModelOutput(**_tensor("grade_probs", mc.TYPE_FP32, [-1, schema.NUM_GRADES])),
    ]


def _latest_version_policy() -> mc.ModelVersionPolicy:
    return mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1))


# Requests waiting in Triton's queue past this long are rejected, not computed for a
# caller that has given up; a request's own timeout (student-inference sends the
# caller's remaining deadline) overrides it.
DEFAULT_QUEUE_TIMEOUT_US = 2_000_000


def _expiring_queue(max_queue_delay_us: int = 0) -> mc.ModelDynamicBatching:
    """A dynamic batcher whose queue drops requests that expired while waiting."""
    return mc.ModelDynamicBatching(
        max_queue_delay_microseconds=max_queue_delay_us,
        default_queue_policy=mc.ModelQueuePolicy(
            timeout_action=mc.ModelQueuePolicy.REJECT,
            default_timeout_microseconds=DEFAULT_QUEUE_TIMEOUT_US,
            allow_timeout_override=True,
        ),
    )


def _python_model(name: str, threads: int) -> mc.ModelConfig:
    return mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=0,
        version_policy=_latest_version_policy(),
        input=_external_inputs(),
        output=_external_outputs(),
        instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)],
        # One request is one query's products (no batch dimension): the batcher forms
        # no batches here, it only gives the queue its expiry policy.
        dynamic_batching=_expiring_queue(),
        parameters={"intra_op_threads": mc.ModelParameter(string_value=str(threads))},
    )


def _next_version(model_dir: Path) -> int:
    existing = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(existing, default=0) + 1


def _resolve_version(spec_version: str, model_dir: Path, version: int | None) -> int:
    if version is not None:
        if version < 1:
            raise ValueError(f"version: Triton versions are positive integers, got {version}")
        return version
    return (
        int(spec_version)
        if spec_version.isdigit() and int(spec_version) > 0
        else (_next_version(model_dir))
    )


def _version_dir(
    model_dir: Path, version: int, export_dir: Path, serving: dict[str, object], source: str
) -> Path:
    """Fill ``<model>/<version>/`` (replacing an older copy of the same version)."""
    target = model_dir / str(version)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    models = resources.files("training.export.triton_models")
    (target / "model.py").write_text(models.joinpath(source).read_text())
    (target / PAIR_TOKENS).write_text(models.joinpath(PAIR_TOKENS).read_text())
    shutil.copy2(export_dir / EXPORT_TOKENIZER, target / TOKENIZER_JSON)
    shutil.copy2(export_dir / STUDENT_JSON, target / STUDENT_JSON)
    (target / SERVING_JSON).write_text(json.dumps(serving, indent=2) + "\n")
    return target


def write_triton_repository(
    export_dir: Path,
    repository: Path,
    *,
    variant: Variant = "cpu",
    model_name: str | None = None,
    version: int | None = None,
    precision: Precision = "fp32",
    max_batch_size: int = 64,
    gpu_instances: int = 1,
    cpu_threads: int = 1,
    int8_min_spearman: float = INT8_MIN_SPEARMAN,
) -> int:
    """Add the cross-encoder export at ``export_dir`` to ``repository``.

    ``version`` defaults to the student's version when it is a positive integer, else
    to one past the highest version present. Returns the version written.
    ``precision="int8"`` is refused (:class:`ExportAccuracyError` naming the measured
    value) unless the export recorded an int8 Spearman's rho against fp32 of at least
    ``int8_min_spearman``.
    """
    export_dir, repository = Path(export_dir), Path(repository)
    spec = read_student_spec(export_dir)
    if not isinstance(spec, CrossEncoderSpec):
        raise ValueError(
            f"{export_dir}: kind={spec.kind!r}; Triton repositories are written for "
            "cross-encoder students (two-tower students serve from product_embeddings.npy)"
        )
    name = model_name or spec.name
    if not _NAME.match(name):
        raise ValueError(f"model_name: {name!r} is not a valid Triton model name")
    onnx_file = CROSS_ENCODER_INT8 if precision == "int8" else CROSS_ENCODER_ONNX
    if not (export_dir / onnx_file).is_file():
        raise ValueError(f"{export_dir}: {onnx_file} missing (precision={precision!r})")
    if precision == "int8":
        require_int8_spearman(recorded_int8_spearman(export_dir), int8_min_spearman)
    tokenizer = AutoTokenizer.from_pretrained(export_dir / TOKENIZER_DIR)
    serving: dict[str, object] = {
        "max_length": spec.max_length,
        "pad_id": tokenizer.pad_token_id,
        "pad_token": tokenizer.pad_token,
        "input_names": list(input_names(tokenizer)),
        "onnx": TRITON_ONNX,
    }
    if variant == "cpu":
        model_dir = repository / name
        number = _resolve_version(spec.version, model_dir, version)
        target = _version_dir(model_dir, number, export_dir, serving, "cross_encoder.py")
        shutil.copy2(export_dir / onnx_file, target / TRITON_ONNX)
        _write_config(model_dir, _python_model(name, cpu_threads))
        return number
    if variant != "gpu":
        raise ValueError(f"variant: expected 'cpu' or 'gpu', got {variant!r}")
    if precision != "fp32":
        raise ValueError("precision: int8 dynamic quantization is a CPU optimisation; use fp32")
    number = _resolve_version(spec.version, repository / name, version)
    _write_gpu_models(repository, name, number, export_dir, serving, max_batch_size, gpu_instances)
    return number


def recorded_int8_spearman(export_dir: Path) -> float:
    """The int8 Spearman's rho the export recorded in ``export.json``."""
    path = Path(export_dir) / EXPORT_JSON
    rho = json.loads(path.read_text()).get("int8_spearman") if path.is_file() else None
    if rho is None:
        raise ExportAccuracyError(
            f"{path}: int8_spearman not recorded; re-export with int8 to measure it"
        )
    return float(rho)


def write_cpu_repository(
    export_dir: Path,
    repository: Path,
    *,
    model_name: str | None = None,
    cpu_threads: int = 1,
    int8: bool = False,
    int8_min_spearman: float = INT8_MIN_SPEARMAN,
) -> str:
    """Add a cross-encoder export to ``repository`` (CPU variant); returns the model name.

    ``cpu_threads`` is the model's ONNX Runtime intra-op thread count; ``int8`` serves
    the export's dynamically quantized graph.
    """
    spec = read_student_spec(export_dir)
    name = model_name or spec.name
    write_triton_repository(
        export_dir,
        repository,
        variant="cpu",
        model_name=name,
        cpu_threads=cpu_threads,
        precision="int8" if int8 else "fp32",
        int8_min_spearman=int8_min_spearman,
    )
    return name


def _write_gpu_models(
    repository: Path,
    name: str,
    version: int,
    export_dir: Path,
    serving: dict[str, object],
    max_batch_size: int,
    instances: int,
) -> None:
    ids = [str(n) for n in serving["input_names"]]  # type: ignore[attr-defined]
    tokenizer_name, onnx_name = f"{name}_tokenizer", f"{name}_onnx"

    _version_dir(repository / tokenizer_name, version, export_dir, serving, "tokenizer.py")
    _write_config(
        repository / tokenizer_name,
        mc.ModelConfig(
            name=tokenizer_name,
            backend="python",
            max_batch_size=0,
            version_policy=_latest_version_policy(),
            input=_external_inputs(),
            output=[mc.ModelOutput(**_tensor(n, mc.TYPE_INT64, [-1, -1])) for n in ids],
            instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)],
        ),
    )

    onnx_version = repository / onnx_name / str(version)
    if onnx_version.exists():
        shutil.rmtree(onnx_version)
    onnx_version.mkdir(parents=True)
    shutil.copy2(export_dir / CROSS_ENCODER_ONNX, onnx_version / TRITON_ONNX)
    # The graph's outputs are [batch] and [batch, 4]; Triton's batched dims exclude the
    # batch axis, so the rank-1 score is declared [1] and reshaped to a scalar.
    _write_config(
        repository / onnx_name,
        mc.ModelConfig(
            name=onnx_name,
            platform="onnxruntime_onnx",
            max_batch_size=max_batch_size,
            version_policy=_latest_version_policy(),
            input=[mc.ModelInput(**_tensor(n, mc.TYPE_INT64, [-1])) for n in ids],
            output=[
                mc.ModelOutput(
                    **_tensor("score", mc.TYPE_FP32, [1], reshape=mc.ModelTensorReshape(shape=[]))
                ),
                mc.ModelOutput(**_tensor("grade_probs", mc.TYPE_FP32, [schema.NUM_GRADES])),
            ],
            dynamic_batching=_expiring_queue(max_queue_delay_us=500),
            instance_group=[
                mc.ModelInstanceGroup(count=instances, kind=mc.ModelInstanceGroup.KIND_GPU)
            ],
        ),
    )

    # The ensemble's version directory carries the student's spec and tokenizer too:
    # student-inference reads them from <name>/<version> whichever variant it serves.
    ensemble_version = repository / name / str(version)
    ensemble_version.mkdir(parents=True, exist_ok=True)
    shutil.copy2(export_dir / EXPORT_TOKENIZER, ensemble_version / TOKENIZER_JSON)
    shutil.copy2(export_dir / STUDENT_JSON, ensemble_version / STUDENT_JSON)
    step = mc.ModelEnsembling.Step
    # Steps follow the composing models' latest loaded version (-1).
    _write_config(
        repository / name,
        mc.ModelConfig(
            name=name,
            platform="ensemble",
            max_batch_size=0,
            input=_external_inputs(),
            output=_external_outputs(),
            ensemble_scheduling=mc.ModelEnsembling(
                step=[
                    step(
                        model_name=tokenizer_name,
                        model_version=-1,
                        input_map={
                            "query": "query",
                            "product_text": "product_text",
                            "product_id": "product_id",
                        },
                        output_map={n: n for n in ids},
                    ),
                    step(
                        model_name=onnx_name,
                        model_version=-1,
                        input_map={n: n for n in ids},
                        output_map={"score": "score", "grade_probs": "grade_probs"},
                    ),
                ]
            ),
        ),
    )
