"""The student trainer: `relkd student train`, also the Kubernetes Job's entry point.

One optimizer step = ``grad_accum`` micro-batches from the :class:`QueryPairSampler`.
Each micro-batch encodes the unique examples of its pairs once; Margin-MSE reads the
pairs, the pointwise losses read the examples. Dev NDCG@10 is measured every
``eval_every`` steps: an improvement overwrites the best checkpoint in ``output_dir``,
``patience`` evaluations without one stop the run, and ``output_dir/last`` holds what a
``--resume`` needs until the run finishes. The loop itself (precision, accumulation,
resume state, early stopping, logging, prefetching) is ``training/loop.py``; this
module supplies the batches, the loss and the evaluation.

Run as ``python -m training.student.train --config student.yaml``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from contracts import schema
from contracts.text import product_text
from training.data.storage import read_table
from training.eval import metrics
from training.loop import (
    DeviceSetup,
    Evaluation,
    LoopSettings,
    MetricsLog,
    StepLoss,
    TrainingLoop,
    pin,
    seed_everything,
)
from training.student.config import StudentKind, StudentTrainConfig
from training.student.examples import (
    HUMAN,
    TEACHER,
    Example,
    QueryPairSampler,
    load_training_set,
)
from training.student.losses import Targets, build_loss
from training.student.models import CrossEncoderStudent, StudentModel, TwoTowerStudent
from training.student.models.base import to_device

LAST = "last"
METRICS_CSV = "metrics.csv"
METRICS_FIELDS = (
    "step",
    "loss",
    "margin_mse",
    "mse",
    "kl",
    "cot",
    "lr",
    "pairs_per_s",
    "dev_ndcg10",
)
LOCK_FILE = ".lock"
SUMMARY_JSON = "train_summary.json"
CONFIG_JSON = "train_config.json"
NDCG_K = 10


@dataclass(frozen=True)
class TrainResult:
    output_dir: str
    kind: str
    steps: int
    best_step: int
    best_dev_ndcg10: float
    stopped_early: bool
    train_examples: int
    train_queries: int
    human_queries: int
    teacher_queries: int
    pairs_per_s: float
    train_seconds: float
    # Label store snapshot the teacher labels came from; None: the dataset's table.
    teacher_snapshot: str | None = None
    # Examples with at least one chain-of-thought target, per source (human, teacher).
    rationale_examples: dict[str, int] = field(default_factory=dict)


def build_model(config: StudentTrainConfig) -> StudentModel:
    if config.kind == StudentKind.CROSS_ENCODER:
        return CrossEncoderStudent.from_base(
            config.base_model,
            num_layers=config.num_layers,
            max_length=config.max_length,
            text_fields=config.text_fields,
        )
    return TwoTowerStudent.from_base(
        config.base_model,
        num_layers=config.num_layers,
        max_length=config.max_length,
        text_fields=config.text_fields,
        shared=config.shared_towers,
    )


def parameter_groups(model: StudentModel, lr: float, head_lr_scale: float) -> list[dict[str, Any]]:
    """Pretrained encoder weights at ``lr``; freshly initialised heads at a higher rate.

    A new classification head on a pretrained encoder otherwise sits on a plateau for
    many steps (near-constant scores), which matters when a run is a few hundred steps.
    """
    encoder_ids = {id(p) for encoder in model.encoders() for p in encoder.base_model.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) in encoder_ids], "lr": lr},
        {"params": [p for p in trainable if id(p) not in encoder_ids], "lr": lr * head_lr_scale},
    ]


def batch_inputs(
    model: StudentModel,
    examples: list[Example],
    pairs: np.ndarray,
    pad_to_multiple_of: int | None = None,
) -> tuple[dict[str, Any], Targets]:
    """Tokenized unique examples of ``pairs`` and their targets, pairs re-indexed."""
    unique, inverse = np.unique(pairs, return_inverse=True)
    chosen = [examples[i] for i in unique]
    inputs = model.tokenize(
        [e.query for e in chosen], [e.product_text for e in chosen], pad_to_multiple_of
    )
    targets = Targets(
        scores=torch.tensor([e.score for e in chosen], dtype=torch.float32),
        grade_probs=torch.from_numpy(np.stack([e.grade_probs for e in chosen])),
        rationale=torch.from_numpy(np.stack([e.rationale for e in chosen])),
        rationale_known=torch.from_numpy(np.stack([e.rationale_known for e in chosen])),
        pairs=torch.from_numpy(inverse.reshape(pairs.shape).astype(np.int64)),
    )
    return inputs, targets


class DevSet:
    """Dev-split judgments grouped by query, for NDCG@10 during training.

    Same metric and gains as `relkd eval`, on at most ``max_queries`` dev queries (a
    fixed sample) so that frequent evaluation stays cheap.
    """

    def __init__(self, dataset_dir: Path, text_fields: list[str], max_queries: int | None):
        queries = read_table(dataset_dir, "queries", filter_split=schema.Split.DEV).to_pylist()
        text_of = {q["query_id"]: q["query"] for q in queries}
        products = {
            p["product_id"]: product_text(p, text_fields)
            for p in read_table(dataset_dir, "products").to_pylist()
        }
        judged: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        for j in read_table(dataset_dir, "judgments", filter_split=schema.Split.DEV).to_pylist():
            judged[j["query_id"]].append((j["product_id"], products[j["product_id"]], j["grade"]))
        ids = sorted(judged)
        if not ids:
            raise ValueError(f"{dataset_dir}: no judged dev queries for early stopping")
        if max_queries is not None and len(ids) > max_queries:
            keep = np.random.default_rng(0).choice(len(ids), max_queries, replace=False)
            ids = [ids[i] for i in sorted(keep)]
        self.groups = [(q, text_of[q], judged[q]) for q in ids]
        self.qrels = {q: {pid: grade for pid, _, grade in judged[q]} for q in ids}

    @torch.inference_mode()
    def ndcg(self, model: StudentModel, device: torch.device, batch_size: int = 256) -> float:
        """Mean NDCG@10 (graded gains, as `relkd eval` reports) of ``model`` on the dev set."""
        model.eval()
        pairs = [
            (qid, query, pid, text) for qid, query, rows in self.groups for pid, text, _ in rows
        ]
        scores = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            inputs = model.tokenize([p[1] for p in chunk], [p[3] for p in chunk])
            scores.append(model(to_device(inputs, device)).scores.float().cpu().numpy())
        model.train()
        run: dict[str, dict[str, float]] = defaultdict(dict)
        for (qid, _, pid, _), score in zip(pairs, np.concatenate(scores).tolist(), strict=True):
            run[qid][pid] = score
        return metrics.ndcg(self.qrels, run, k=NDCG_K, gains=metrics.GRADED_GAINS)


@contextlib.contextmanager
def output_dir_lock(out: Path) -> Iterator[None]:
    """Hold ``out`` for one run: two runs into one directory interleave metrics and overwrite
    each other's best checkpoint. The lock is flock(2), so a crashed run releases it."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOCK_FILE).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"output_dir: {out} is in use by another training run") from None
        yield


def train(config: StudentTrainConfig) -> TrainResult:
    """Train one student as configured; return where the best checkpoint is and how good."""
    with output_dir_lock(config.output_dir):
        return _train(config)


# Fields that say where or how a run reports, not what it trains.
_NOT_TRAINING = {"output_dir", "resume", "progress"}


def finished_run(config: StudentTrainConfig) -> TrainResult | None:
    """The result of a finished run in ``config.output_dir`` that trained with the same
    settings as ``config``, or None: lets a re-run of many students (the demo's
    students stage, bench_distill_gain) skip the ones a crash did not interrupt.

    The saved config has its budget resolved (``max_steps`` from ``epochs``), so
    ``max_steps`` is compared only when ``epochs`` does not set it.
    """
    out = config.output_dir
    if not (out / SUMMARY_JSON).exists() or not (out / CONFIG_JSON).exists():
        return None
    saved = StudentTrainConfig.model_validate_json((out / CONFIG_JSON).read_text())
    ignore = _NOT_TRAINING | ({"max_steps"} if config.epochs is not None else set())
    if saved.model_dump(exclude=ignore) != config.model_dump(exclude=ignore):
        return None
    summary = json.loads((out / SUMMARY_JSON).read_text())
    return TrainResult(**{**summary, "output_dir": str(out)})


MicroBatch = tuple[dict[str, Any], Targets, int]  # inputs, targets, pairs


class _StudentTask:
    """The student's part of the training loop: its batches, loss and evaluation."""

    def __init__(
        self,
        config: StudentTrainConfig,
        model: StudentModel,
        examples: list[Example],
        sampler: QueryPairSampler,
        dev: DevSet,
        setup: DeviceSetup,
    ) -> None:
        self.config, self.model, self.examples = config, model, examples
        self.sampler, self.dev, self.setup = sampler, dev, setup
        self.loss_fn = build_loss(config.loss_weights)

    def micro_batches(self, step: int) -> list[MicroBatch]:
        multiple = self.setup.pad_multiple
        batches = []
        for micro in range(self.config.grad_accum):
            pairs = self.sampler.batch(step * self.config.grad_accum + micro)
            inputs, targets = batch_inputs(
                self.model, self.examples, pairs, multiple if multiple > 1 else None
            )
            if self.setup.cuda:
                inputs, targets = pin(inputs), targets.pin_memory()
            batches.append((inputs, targets, len(pairs)))
        return batches

    def loss(self, batch: MicroBatch) -> StepLoss:
        inputs, targets, pairs = batch
        device = self.setup.device
        with self.setup.autocast():
            output = self.model(to_device(inputs, device))
        total, parts = self.loss_fn(output, targets.to(device))
        return StepLoss(total, parts, pairs)

    def evaluate(self) -> Evaluation:
        ndcg = self.dev.ndcg(self.model, self.setup.device)
        return Evaluation(score=ndcg, metrics={"dev_ndcg10": ndcg})

    def on_best(self, step: int, evaluation: Evaluation) -> None:
        self.model.save(self.config.output_dir, name=self.config.name, version=self.config.version)

    def extra_state(self) -> dict[str, Any]:
        return {}  # the best checkpoint is on disk

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def _train(config: StudentTrainConfig) -> TrainResult:
    seed_everything(config.seed)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    setup = DeviceSetup.resolve(config.device, "auto" if config.amp else "fp32")
    out = config.output_dir

    training_set = load_training_set(config)
    config = config.with_budget(len(training_set.examples))
    sampler = QueryPairSampler(
        training_set.examples,
        queries_per_batch=config.queries_per_batch,
        pairs_per_query=config.pairs_per_query,
        min_margin=config.min_margin,
        seed=config.seed,
    )
    dev = DevSet(config.dataset_dir, config.text_fields, config.eval_max_queries)

    model = build_model(config)
    model.to(setup.device).train()
    if config.freeze_embeddings:
        for embeddings in model.word_embeddings():
            embeddings.requires_grad_(False)
    task = _StudentTask(config, model, training_set.examples, sampler, dev, setup)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.lr, config.head_lr_scale),
        weight_decay=config.weight_decay,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * config.max_steps), config.max_steps
    )
    loop = TrainingLoop(
        model,
        optimizer,
        scheduler,
        setup,
        LoopSettings(
            max_steps=config.max_steps,
            grad_accum=config.grad_accum,
            eval_every=config.eval_every,
            patience=config.patience,
            description=f"train {config.kind}",
            size_unit="pairs",
            resume_dir=out / LAST,
            progress=config.progress,
        ),
    )
    resuming = config.resume and loop.resume(task)
    out.mkdir(parents=True, exist_ok=True)
    # A summary says the checkpoint beside it is a finished run's (finished_run): an
    # earlier run's must not outlive this one's first overwritten checkpoint.
    (out / SUMMARY_JSON).unlink(missing_ok=True)
    (out / CONFIG_JSON).write_text(config.model_dump_json(indent=2) + "\n")
    log = MetricsLog(out / METRICS_CSV, METRICS_FIELDS, append=resuming)
    try:
        run = loop.run(task, log)
    finally:
        log.close()

    result = TrainResult(
        output_dir=str(out),
        kind=str(config.kind),
        steps=run.state.step,
        best_step=run.state.best_step,
        best_dev_ndcg10=run.state.best_score,
        stopped_early=run.state.stopped_early,
        train_examples=len(training_set.examples),
        train_queries=sampler.num_queries,
        human_queries=training_set.human_queries,
        teacher_queries=training_set.teacher_queries,
        pairs_per_s=run.examples_per_s,
        train_seconds=run.train_seconds,
        teacher_snapshot=training_set.teacher_snapshot,
        rationale_examples={
            source: training_set.rationale_examples(source) for source in (HUMAN, TEACHER)
        },
    )
    (out / SUMMARY_JSON).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


if __name__ == "__main__":
    from training.student.cli import train_main

    train_main()
