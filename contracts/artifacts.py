"""The artifact contract: the files a trainer or the exporter writes and others read.

Every file and folder name of a checkpoint, an export and a Triton version directory is
defined here, and ``student.json`` / ``teacher.json`` each have one typed reader and one
typed writer. Torch-free: the student-inference service reads exports with it.

Student checkpoint (``relkd student train``), a directory with ``student.json`` and
Hugging Face ``save_pretrained`` folders:

* cross-encoder: ``model/`` = ``AutoModelForSequenceClassification(num_labels=5)`` (4 grade
  logits, then a free score logit) and its tokenizer;
* two-tower: ``query_tower/`` and ``product_tower/`` = ``AutoModel`` and tokenizer;
* both: ``aux_heads.pt``, the training-only heads (rationale, two-tower grade head).

Student export (``relkd student export``):

* cross-encoder: ``model.onnx`` (+ ``model.int8.onnx``), ``tokenizer/``;
* two-tower: ``query_tower.onnx`` (+ ``query_tower.int8.onnx``), ``tokenizer/`` (the
  query tower's), ``product_embeddings.npy`` [products, hidden] float32,
  ``product_ids.json`` (row order of the embeddings), ``scoring.json`` (scale, bias:
  score = scale * cos(q, p) + bias);
* both: ``student.json`` (the checkpoint's spec, carried along), ``export.json``.

Teacher checkpoint (``relkd teacher train``): the (LoRA-merged) model and tokenizer
``save_pretrained`` into the directory, ``teacher.json`` and ``train_config.yaml``.

The specs validate strictly the fields their readers need and keep the rest
(training-only metadata such as the dev metrics) untouched, so an export carries it along.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from contracts import schema
from contracts.identity import ModelRef

# Triton repository flavours: where the model runs, and the weights it serves.
Variant = Literal["cpu", "gpu"]
Precision = Literal["fp32", "int8"]
TeacherKind = Literal["classifier", "generative"]

# Student checkpoint.
STUDENT_JSON = "student.json"
CROSS_ENCODER_DIR = "model"
QUERY_TOWER_DIR = "query_tower"
PRODUCT_TOWER_DIR = "product_tower"
AUX_HEADS = "aux_heads.pt"

# Student export.
EXPORT_JSON = "export.json"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_JSON = "tokenizer.json"
EXPORT_TOKENIZER = Path(TOKENIZER_DIR) / TOKENIZER_JSON
CROSS_ENCODER_ONNX = "model.onnx"
CROSS_ENCODER_INT8 = "model.int8.onnx"
QUERY_TOWER_ONNX = "query_tower.onnx"
QUERY_TOWER_INT8 = "query_tower.int8.onnx"
PRODUCT_EMBEDDINGS = "product_embeddings.npy"
PRODUCT_IDS = "product_ids.json"
SCORING_JSON = "scoring.json"

# Triton version directory (besides student.json and tokenizer.json). The Python-backend
# models in training/export/triton_models run inside Triton and repeat these two names.
SERVING_JSON = "serving.json"
TRITON_ONNX = "model.onnx"

# Teacher checkpoint.
TEACHER_JSON = "teacher.json"


def _problems(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
    )


class _StudentSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    max_length: int = Field(gt=0)
    text_fields: list[str] = Field(default_factory=lambda: ["title"], min_length=1)

    @property
    def model_ref(self) -> ModelRef:
        """The training identity of the student."""
        return ModelRef(name=self.name, version=self.version)


class CrossEncoderSpec(_StudentSpec):
    kind: Literal["cross-encoder"] = "cross-encoder"
    num_grades: Literal[4] = schema.NUM_GRADES


class TwoTowerSpec(_StudentSpec):
    kind: Literal["two-tower"] = "two-tower"
    scale: float
    bias: float
    pooling: Literal["mean"] = "mean"
    # One encoder serves both towers (the checkpoint still saves both folders).
    shared_towers: bool = False


StudentSpec = Annotated[CrossEncoderSpec | TwoTowerSpec, Field(discriminator="kind")]
_STUDENT_ADAPTER: TypeAdapter[CrossEncoderSpec | TwoTowerSpec] = TypeAdapter(StudentSpec)


def _check_text_fields(spec: CrossEncoderSpec | TwoTowerSpec, where: Path | str) -> None:
    unknown = sorted(set(spec.text_fields) - set(schema.PRODUCTS.names))
    if unknown:
        raise ValueError(
            f"{where}: text_fields {unknown} are not columns of the products table "
            f"({schema.PRODUCTS.names})"
        )


def student_spec(fields: dict[str, Any]) -> CrossEncoderSpec | TwoTowerSpec:
    """The validated student spec of ``fields`` (``kind`` picks the class)."""
    try:
        spec = _STUDENT_ADAPTER.validate_python(fields)
    except ValidationError as err:
        raise ValueError(f"invalid student spec: {_problems(err)}") from None
    _check_text_fields(spec, "student spec")
    return spec


def read_student_spec(directory: Path) -> CrossEncoderSpec | TwoTowerSpec:
    """The validated ``student.json`` of a checkpoint, export or Triton version directory.

    Errors name the file and the bad field.
    """
    path = Path(directory) / STUDENT_JSON
    if not path.is_file():
        raise ValueError(f"{directory}: not a student checkpoint ({STUDENT_JSON} missing)")
    try:
        spec = _STUDENT_ADAPTER.validate_json(path.read_bytes())
    except ValidationError as err:
        raise ValueError(f"{path}: invalid student spec: {_problems(err)}") from None
    _check_text_fields(spec, path)
    return spec


def write_student_spec(spec: CrossEncoderSpec | TwoTowerSpec, directory: Path) -> Path:
    """Write ``spec`` as ``directory/student.json``; returns the path."""
    path = Path(directory) / STUDENT_JSON
    path.write_text(json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")
    return path


class TeacherSpec(BaseModel):
    """What a trained teacher says about itself (``teacher.json``).

    ``version`` is a digest of the weights and the labeling settings, so two teachers
    with the same version label identically.
    """

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    kind: TeacherKind
    backbone: str = Field(min_length=1, description="Checkpoint the teacher was fine-tuned from.")
    template: str = Field(min_length=1, description="The resolved product text template.")
    max_length: int = Field(gt=0)
    temperature: float = Field(gt=0, description="Calibration temperature of the grade logits.")
    num_grades: Literal[4] = schema.NUM_GRADES
    rationale_heads: bool = Field(
        False,
        description="A classifier whose head has, after the grade logits, one Match logit "
        "triple per rationale field (schema.RATIONALE_FIELDS); False for teachers trained "
        "before rationale heads and for generative teachers.",
    )

    @property
    def model_ref(self) -> ModelRef:
        """The training identity of the teacher."""
        return ModelRef(name=self.name, version=self.version)


def read_teacher_spec(directory: Path) -> TeacherSpec:
    """The validated ``teacher.json`` of a teacher checkpoint; errors name the bad field."""
    path = Path(directory) / TEACHER_JSON
    if not path.is_file():
        raise ValueError(f"{directory}: not a teacher checkpoint ({TEACHER_JSON} missing)")
    try:
        return TeacherSpec.model_validate_json(path.read_bytes())
    except ValidationError as err:
        raise ValueError(f"{path}: invalid teacher spec: {_problems(err)}") from None


def write_teacher_spec(spec: TeacherSpec, directory: Path) -> Path:
    """Write ``spec`` as ``directory/teacher.json``; returns the path."""
    path = Path(directory) / TEACHER_JSON
    path.write_text(json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return path
