"""The student checkpoint contract, as the exporter reads it.

The trainer writes a directory with ``student.json`` and Hugging Face
``save_pretrained`` folders:

* cross-encoder: ``model/`` = ``AutoModelForSequenceClassification(num_labels=4)`` and
  its tokenizer;
* two-tower: ``query_tower/`` and ``product_tower/`` = ``AutoModel`` and tokenizer.

The models validate ``student.json`` strictly on the fields the export needs and keep
the rest (training-only metadata) untouched, so the exported artefacts carry it along.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from contracts import schema

# Triton repository flavours: where the model runs, and the weights it serves.
Variant = Literal["cpu", "gpu"]
Precision = Literal["fp32", "int8"]

STUDENT_JSON = "student.json"
CROSS_ENCODER_DIR = "model"
QUERY_TOWER_DIR = "query_tower"
PRODUCT_TOWER_DIR = "product_tower"


class _StudentSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    max_length: int = Field(gt=0)
    text_fields: list[str] = Field(default_factory=lambda: ["title"], min_length=1)


class CrossEncoderSpec(_StudentSpec):
    kind: Literal["cross-encoder"]
    num_grades: Literal[4] = schema.NUM_GRADES


class TwoTowerSpec(_StudentSpec):
    kind: Literal["two-tower"]
    scale: float
    bias: float
    pooling: Literal["mean"] = "mean"


StudentSpec = Annotated[CrossEncoderSpec | TwoTowerSpec, Field(discriminator="kind")]
_SPEC_ADAPTER: TypeAdapter[CrossEncoderSpec | TwoTowerSpec] = TypeAdapter(StudentSpec)


def read_spec(checkpoint: Path) -> CrossEncoderSpec | TwoTowerSpec:
    """The validated ``student.json`` of ``checkpoint``; errors name the bad field."""
    path = Path(checkpoint) / STUDENT_JSON
    if not path.is_file():
        raise ValueError(f"{checkpoint}: not a student checkpoint ({STUDENT_JSON} missing)")
    try:
        spec = _SPEC_ADAPTER.validate_json(path.read_bytes())
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"{path}: invalid student spec: {problems}") from None
    unknown = sorted(set(spec.text_fields) - set(schema.PRODUCTS.names))
    if unknown:
        raise ValueError(
            f"{path}: text_fields {unknown} are not columns of the products table "
            f"({schema.PRODUCTS.names})"
        )
    return spec


def write_spec(spec: CrossEncoderSpec | TwoTowerSpec, directory: Path) -> Path:
    path = Path(directory) / STUDENT_JSON
    path.write_text(json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")
    return path
