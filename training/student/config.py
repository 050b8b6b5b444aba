"""Configuration of one student training run.

A run is configured by a YAML or JSON file (``--config``) whose keys are the fields of
:class:`StudentTrainConfig`; ``--set FIELD=VALUE`` overrides single fields
(:mod:`training.config_cli`). Defaults are
chosen so that a student trains in about a minute on two CPU cores and still learns:
two of MiniLM's six layers, query + title truncated to 32 tokens, a few hundred steps.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StudentKind(StrEnum):
    CROSS_ENCODER = "cross-encoder"
    TWO_TOWER = "two-tower"


class LossWeights(BaseModel):
    """Weight of each distillation loss in the training objective; 0 turns a loss off."""

    model_config = ConfigDict(extra="forbid")

    margin_mse: float = Field(1.0, ge=0, description="Margin-MSE over same-query pairs.")
    mse: float = Field(0.1, ge=0, description="Pointwise MSE on the expected grade.")
    kl: float = Field(0.5, ge=0, description="KL(teacher || student) over the grades.")
    cot: float = Field(0.1, ge=0, description="Chain-of-thought rationale heads.")

    @model_validator(mode="after")
    def _some_loss(self) -> LossWeights:
        if self.margin_mse + self.mse + self.kl + self.cot <= 0:
            raise ValueError("loss_weights: at least one loss weight must be positive")
        return self


def epoch_steps(
    epochs: float, examples: int, queries_per_batch: int, pairs_per_query: int, grad_accum: int
) -> int:
    """Optimizer steps of ``epochs`` passes over ``examples`` (two examples per pair)."""
    pairs_per_step = queries_per_batch * pairs_per_query * grad_accum
    return max(1, math.ceil(epochs * examples / (2 * pairs_per_step)))


class StudentTrainConfig(BaseModel):
    """Everything one training run reads; see ``docs/student.md`` for each field."""

    model_config = ConfigDict(extra="forbid")

    kind: StudentKind = Field(
        StudentKind.CROSS_ENCODER,
        description="cross-encoder: one encoder reads query and product together; two-tower: "
        "query and product encoded apart, scored by a dot product.",
    )
    dataset_dir: Path = Field(..., description="Dataset directory (contracts.schema).")
    output_dir: Path = Field(Path(".relkd/students/student"), description="Checkpoint dir.")
    name: str = Field("relkd-student", description="Model name written to student.json.")
    version: str = Field("1", description="Model version written to student.json.")
    base_model: str | None = Field(
        None, description="HF model dir to start from; default: packaged all-MiniLM-L6-v2."
    )
    # All six MiniLM layers by default: with 2-3 layers the [CLS] state hardly depends on
    # the input and a cross-encoder learns slowly (dev NDCG@10 0.64 vs 0.89 at step 30).
    num_layers: int | None = Field(
        None, ge=1, description="Keep only the first N transformer layers; null keeps all."
    )
    max_length: int = Field(32, ge=8, le=512, description="Tokens of query + product text.")
    text_fields: list[str] = Field(["title"], min_length=1, description="Product text fields.")
    freeze_embeddings: bool = Field(
        False,
        description="Keep the word-embedding table fixed: it is most of a small student's "
        "weights, costs more to update than the layers, and a few thousand queries barely "
        "move it.",
    )
    shared_towers: bool = Field(True, description="Two-tower: one encoder for both towers.")

    # Data mix.
    use_teacher_labels: bool = Field(True, description="Train on the teacher_labels table.")
    label_store: Path | None = Field(
        None,
        description="Label store directory (RELKD_LABEL_STORE_DIR): take the teacher labels "
        "and the changed product text from one of its snapshots instead of the dataset's "
        "teacher_labels table. Null: the dataset's table.",
    )
    snapshot: str = Field(
        "latest",
        min_length=1,
        description="Label store snapshot id to train on ('latest': the newest at start); "
        "name one to make a run reproducible while labels keep arriving.",
    )
    augmented_queries: int | None = Field(
        None, ge=0, description="Teacher-labeled queries to use (null: all of them)."
    )
    human_fraction: float = Field(
        1.0, ge=0.0, le=1.0, description="Fraction of human-labeled train queries to use."
    )
    min_margin: float = Field(
        0.25, ge=0.0, description="Smallest |target score difference| of a training pair."
    )

    loss_weights: LossWeights = Field(
        default_factory=LossWeights, description="Weight of each distillation loss."
    )

    # Optimisation.
    queries_per_batch: int = Field(8, ge=1, description="Queries per micro-batch.")
    pairs_per_query: int = Field(4, ge=1, description="Pairs sampled per query per batch.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (warmup, then linear decay).")
    head_lr_scale: float = Field(
        1.0, gt=0, description="Learning-rate multiplier of the freshly initialised heads."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        0.1, ge=0, le=1, description="Fraction of max_steps spent warming the learning rate up."
    )
    max_steps: int = Field(200, ge=1, description="Optimizer steps (unless epochs is set).")
    epochs: float | None = Field(
        None,
        gt=0,
        description="Training budget in passes over the training examples, so that it grows "
        "with the data: max_steps = ceil(epochs * examples / (2 * pairs per step)), each pair "
        "holding two examples. Null: max_steps.",
    )
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    eval_every: int = Field(50, ge=1, description="Evaluate dev NDCG@10 every N steps.")
    patience: int = Field(3, ge=1, description="Evaluations without improvement to stop.")
    eval_max_queries: int | None = Field(
        100, ge=1, description="Dev queries evaluated during training (null: all)."
    )
    amp: bool = Field(True, description="Mixed precision when training on a GPU.")
    device: str | None = Field(None, description="torch device; default cuda if available.")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for torch (null: torch's default). On a CPU shared with "
        "other jobs 1 is often several times faster than oversubscribed threads.",
    )
    seed: int = Field(0, description="Seed of sampling, initialisation and dropout.")

    def with_budget(self, examples: int) -> StudentTrainConfig:
        """This config with ``max_steps`` resolved from ``epochs`` for ``examples``."""
        if self.epochs is None:
            return self
        steps = epoch_steps(
            self.epochs, examples, self.queries_per_batch, self.pairs_per_query, self.grad_accum
        )
        return self.model_copy(update={"max_steps": steps})

    resume: bool = Field(False, description="Continue from output_dir/last if present.")
    progress: bool = Field(True, description="Show progress bars.")
