"""Fine-tune a teacher on a dataset's train split; early stopping and calibration on dev.

Entry points: ``relkd teacher train`` and ``python -m training.teacher.train --config
run.yaml`` (the Kubernetes Job / ``torchrun`` entry point). Under ``torchrun`` every
process trains a DistributedDataParallel replica on its shard of each epoch; all ranks
evaluate the (small, capped) dev split so they take identical early-stopping decisions,
and rank 0 alone writes checkpoints.

The loss is the cross-entropy against the raters' grade distribution (Walmart's
"classification with soft targets"); a one-hot distribution makes it ordinary hard-label
training. A classifier also trains three rationale heads (category / brand / attribute
match, ``rationale_weight`` times their cross-entropy against the judgments' rationale
fields, a field the judgment lacks masked), so every label it publishes carries rationale
distributions for the students' chain-of-thought loss. A generative teacher is trained
on prompt -> rationale -> ``Grade: g`` with the same soft loss on the grade token, plus
the LM loss on the rationale and on the majority grade's token, so free decoding writes
a grade (see ``explain.py``).

The loop itself (precision, accumulation, resume state, early stopping, progress,
prefetching) is ``training/loop.py``; this module supplies the batches, the loss and
the dev evaluation, and calibrates and saves the best model afterwards.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import typer
import yaml
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from contracts.artifacts import TEACHER_JSON, TeacherSpec, read_teacher_spec, write_teacher_spec
from contracts.schema import NUM_GRADES, NUM_MATCH, RATIONALE_FIELDS, Match, Split
from training.loop import (
    DeviceSetup,
    Evaluation,
    LoopSettings,
    StepLoss,
    TrainingLoop,
    pin,
    resolve_precision,
    seed_everything,
    trainable_state,
)
from training.teacher import explain
from training.teacher.config import TeacherTrainConfig
from training.teacher.data import JudgedPair, load_split
from training.teacher.metrics import grade_metrics
from training.teacher.modeling import is_decoder, load_causal_lm, load_classifier, load_tokenizer
from training.teacher.templates import render, resolve_template

CONFIG_FILE = "train_config.yaml"
RESUME_DIR = "last"
# Settings that do not change what a teacher learns (finished_run ignores them).
_NOT_TRAINING = frozenset({"output_dir", "num_threads", "resume"})

console = Console(stderr=True)

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Encoded:
    """One tokenised training/dev example (a pair, or one of a pair's SFT sequences)."""

    input_ids: list[int]
    target: np.ndarray
    lm_labels: list[int] | None = None
    grade_position: int | None = None
    # Classifier rationale heads: the judgment's Match value per field, IGNORE if unknown.
    rationale: list[int] | None = None


IGNORE = -100


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def smoothed(target: np.ndarray, config: TeacherTrainConfig) -> np.ndarray:
    if config.hard_labels:
        target = np.eye(NUM_GRADES, dtype=np.float32)[int(target.argmax())]
    eps = config.label_smoothing
    return (1 - eps) * target + eps / NUM_GRADES


def encode(
    pairs: Sequence[JudgedPair],
    tokenizer: PreTrainedTokenizerBase,
    config: TeacherTrainConfig,
    template: str,
    tokens: explain.GradeTokens | None,
    with_rationale: bool,
) -> list[Encoded]:
    """Tokenise pairs; generative teachers get a direct and (optionally) a step-by-step
    sequence per pair so both the classifier path and the explainable path are trained."""
    encoded: list[Encoded] = []
    for pair in pairs:
        target = smoothed(pair.target, config).astype(np.float32)
        if tokens is None:
            text = render(template, pair.query, pair.product)
            ids = tokenizer(text, truncation=True, max_length=config.max_length)["input_ids"]
            rationale = (
                [IGNORE if value is None else int(value) for value in pair.rationale]
                if config.rationale_weight > 0
                else None
            )
            encoded.append(Encoded(ids, target, rationale=rationale))
            continue
        variants = [(False, "")]
        if with_rationale:
            # The reasoning text needs a value per field: an unknown one reads "not stated".
            fields = [Match.NOT_STATED if value is None else value for value in pair.rationale]
            reasoning = explain.rationale_text(*fields)
            variants.append((True, reasoning))
        for step_by_step, reasoning in variants:
            prompt = explain.prompt_ids(
                tokenizer, template, pair.query, pair.product, step_by_step, config.max_length
            )
            seq = explain.sft_sequence(tokenizer, tokens, prompt, reasoning, pair.grade)
            encoded.append(Encoded(seq.input_ids, target, seq.lm_labels, seq.grade_position))
    return encoded


def collate(examples: Sequence[Encoded], pad_id: int, pad_multiple: int = 1) -> Batch:
    """Right-padded tensors (see modeling.py for why scoring never pads on the left), the
    width rounded up to ``pad_multiple`` (GPU bucketing, see training/loop.py)."""
    longest = max(len(e.input_ids) for e in examples)
    width = -(-longest // pad_multiple) * pad_multiple
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        attention[row, : len(example.input_ids)] = 1
    batch: Batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "target": torch.from_numpy(np.stack([e.target for e in examples])),
    }
    if examples[0].lm_labels is not None:
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        for row, example in enumerate(examples):
            labels[row, : len(example.input_ids)] = torch.tensor(example.lm_labels)
        batch["lm_labels"] = labels
        batch["grade_position"] = torch.tensor([e.grade_position for e in examples])
    if examples[0].rationale is not None:
        batch["rationale"] = torch.tensor([e.rationale for e in examples], dtype=torch.long)
    return batch


def rationale_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the rationale heads' logits [batch, fields, NUM_MATCH] over the
    known fields of ``targets`` [batch, fields]; zero (with a graph) when none is known."""
    flat, wanted = logits.float().flatten(0, 1), targets.flatten()
    if not (wanted != IGNORE).any():
        return flat.sum() * 0.0
    return F.cross_entropy(flat, wanted, ignore_index=IGNORE)


class GradeHead:
    """Maps a model's output to grade logits [batch, NUM_GRADES] plus an auxiliary loss:
    the LM loss of a generative teacher, the rationale heads' loss of a classifier."""

    def __init__(self, tokens: explain.GradeTokens | None, rationale_weight: float = 0.0) -> None:
        self.tokens = tokens
        self.rationale_weight = rationale_weight
        self.aux_name = "rationale" if tokens is None else "lm"

    def __call__(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if self.tokens is None:
            grade_logits = out.logits[:, :NUM_GRADES]
            if self.rationale_weight <= 0 or "rationale" not in batch:
                return grade_logits, torch.zeros((), device=out.logits.device)
            heads = out.logits[:, NUM_GRADES:].reshape(-1, len(RATIONALE_FIELDS), NUM_MATCH)
            aux = self.rationale_weight * rationale_loss(heads, batch["rationale"])
            return grade_logits, aux
        logits = out.logits
        rows = torch.arange(logits.shape[0], device=logits.device)
        grade_ids = torch.tensor(self.tokens.grades, device=logits.device)
        # Full-vocabulary log-probabilities of the grade tokens. The soft loss renormalises
        # them over the four (log_softmax is shift-invariant), so it only shapes how the
        # grade mass is split; the LM loss on the majority grade's token is what moves mass
        # onto the grade tokens from the rest of the vocabulary (free decoding's format).
        grade_logits = logits[rows, batch["grade_position"]].float().log_softmax(-1)[:, grade_ids]
        labels = batch["lm_labels"][:, 1:]
        if (labels != -100).any():
            lm_loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels.reshape(-1),
                ignore_index=-100,
            )
        else:
            lm_loss = torch.zeros((), device=logits.device)
        return grade_logits, lm_loss


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    head: GradeHead,
    examples: Sequence[Encoded],
    pad_id: int,
    batch_size: int,
    setup: DeviceSetup,
) -> torch.Tensor:
    """Grade logits of ``examples`` in order (sorted by length inside for less padding)."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    logits = torch.empty((len(examples), NUM_GRADES))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        examples_chunk = [examples[i] for i in chunk]
        batch = to_device(collate(examples_chunk, pad_id, setup.pad_multiple), setup.device)
        with setup.autocast():
            logits[chunk] = head(model, batch)[0].float().cpu()
    return logits


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Temperature minimising the soft cross-entropy on dev (Guo et al., 2017).

    Optimised over the inverse temperature, in which the loss is convex, with a Wolfe
    line search; a result that does not beat T = 1 (degenerate dev logits) keeps T = 1.
    """
    logits = logits.double()
    targets = targets.double()
    inverse = torch.ones(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([inverse], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = soft_cross_entropy(logits * inverse, targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(1.0 / inverse.detach().clamp(1 / 20, 20))
    with torch.no_grad():
        fitted = soft_cross_entropy(logits / temperature, targets)
        if not fitted <= soft_cross_entropy(logits, targets):
            return 1.0
    return temperature


def weights_digest(directory: Path, extra: dict[str, Any]) -> str:
    """Deterministic short version: the saved weights' bytes plus the labeling settings."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for path in sorted(directory.glob("*.safetensors")):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls) -> Distributed:
        """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        return cls(rank=dist.get_rank(), world=world, local_rank=local_rank)


def _attach_lora(model: PreTrainedModel, config: TeacherTrainConfig) -> torch.nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.SEQ_CLS if config.kind == "classifier" else TaskType.CAUSAL_LM
    lora = LoraConfig(
        task_type=task,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
    )
    return get_peft_model(model, lora)


class _TeacherTask:
    """The teacher's part of the training loop: its batches, loss and dev evaluation.

    The best evaluation's trained parameters and dev logits stay in memory (and in the
    resume state): the run ends by restoring them and calibrating on those logits.
    """

    def __init__(
        self,
        config: TeacherTrainConfig,
        model: torch.nn.Module,
        wrapped: torch.nn.Module,
        head: GradeHead,
        pad_id: int,
        train_examples: list[Encoded],
        dev_examples: list[Encoded],
        dev_pairs: list[JudgedPair],
        ddp: Distributed,
        setup: DeviceSetup,
        steps_per_epoch: int,
    ) -> None:
        self.config, self.model, self.wrapped, self.head = config, model, wrapped, head
        self.pad_id, self.ddp, self.setup = pad_id, ddp, setup
        self.train_examples, self.dev_examples, self.dev_pairs = (
            train_examples,
            dev_examples,
            dev_pairs,
        )
        self.dev_targets = torch.from_numpy(np.stack([p.target for p in dev_pairs]))
        self.steps_per_epoch = steps_per_epoch
        self.best_state = trainable_state(model)
        self.best_logits: torch.Tensor | None = None
        self._evaluated: torch.Tensor | None = None
        self._shard: tuple[int, np.ndarray] | None = None
        wrapped.train()

    def _epoch_shard(self, epoch: int) -> np.ndarray:
        """This rank's share of the epoch's seeded permutation of the train examples."""
        if self._shard is None or self._shard[0] != epoch:
            order = np.random.default_rng(self.config.seed + epoch).permutation(
                len(self.train_examples)
            )
            self._shard = (epoch, order[self.ddp.rank :: self.ddp.world])
        return self._shard[1]

    def micro_batches(self, step: int) -> list[Batch]:
        epoch, within = divmod(step, self.steps_per_epoch)
        shard = self._epoch_shard(epoch)
        size, accum = self.config.batch_size, self.config.grad_accumulation
        batches = []
        for micro in range(within * accum, (within + 1) * accum):
            chunk = [self.train_examples[i] for i in shard[micro * size : (micro + 1) * size]]
            if chunk:
                batch = collate(chunk, self.pad_id, self.setup.pad_multiple)
                batches.append(pin(batch) if self.setup.cuda else batch)
        return batches

    def loss(self, batch: Batch) -> StepLoss:
        batch = to_device(batch, self.setup.device)
        with self.setup.autocast():
            grade_logits, aux_loss = self.head(self.wrapped, batch)
        grade_loss = soft_cross_entropy(grade_logits, batch["target"])
        parts = {"grade": grade_loss.detach(), self.head.aux_name: aux_loss.detach()}
        return StepLoss(grade_loss + aux_loss, parts, len(batch["target"]))

    def dev_logits(self) -> torch.Tensor:
        return predict(
            self.model,
            self.head,
            self.dev_examples,
            self.pad_id,
            self.config.batch_size,
            self.setup,
        )

    def evaluate(self) -> Evaluation:
        self._evaluated = self.dev_logits()
        metrics = grade_metrics(self.dev_pairs, self._evaluated, self.dev_targets)
        self.wrapped.train()
        return Evaluation(score=metrics["ndcg@10"], metrics=metrics)

    def on_best(self, step: int, evaluation: Evaluation) -> None:
        self.best_state, self.best_logits = trainable_state(self.model), self._evaluated

    def extra_state(self) -> dict[str, Any]:
        return {"best_state": self.best_state, "best_logits": self.best_logits}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.best_state, self.best_logits = state["best_state"], state["best_logits"]


def train(config: TeacherTrainConfig) -> dict[str, Any]:
    """Run one training; returns the teacher.json content (rank 0 writes the checkpoint)."""
    ddp = Distributed.setup()
    seed_everything(config.seed)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = (
        torch.device(f"cuda:{ddp.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    )
    setup = DeviceSetup(device, resolve_precision(config.precision, device))
    template = resolve_template(config.template)
    generative = config.kind == "generative"
    if generative and not is_decoder(config.backbone):
        raise ValueError(f"kind: generative needs a decoder LLM backbone, got {config.backbone}")

    tokenizer = load_tokenizer(config.backbone)
    # LoRA freezes the base: keep it in half precision to fit large LLMs; full
    # fine-tuning keeps fp32 master weights and autocasts.
    load_dtype = setup.dtype if config.lora and setup.dtype != torch.float32 else None
    rationale_heads = not generative and config.rationale_weight > 0
    model: torch.nn.Module = (
        load_causal_lm(config.backbone, tokenizer, load_dtype)
        if generative
        else load_classifier(config.backbone, tokenizer, load_dtype, rationale_heads)
    )
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if config.lora:
            model.enable_input_require_grads()
    if config.lora:
        model = _attach_lora(model, config)
    model.to(device)
    tokens = explain.GradeTokens.from_tokenizer(tokenizer) if generative else None
    head = GradeHead(tokens, config.rationale_weight if rationale_heads else 0.0)

    train_pairs = load_split(
        config.dataset_dir, Split.TRAIN, config.max_train_examples, config.seed
    )
    dev_pairs = load_split(config.dataset_dir, Split.DEV, config.max_dev_examples, config.seed)
    if not train_pairs or not dev_pairs:
        raise ValueError(
            f"dataset_dir {config.dataset_dir}: needs judged train and dev pairs "
            f"(found {len(train_pairs)} train, {len(dev_pairs)} dev)"
        )
    train_examples = encode(train_pairs, tokenizer, config, template, tokens, with_rationale=True)
    dev_examples = encode(dev_pairs, tokenizer, config, template, tokens, with_rationale=False)

    device_ids = [ddp.local_rank] if device.type == "cuda" else None
    wrapped = DistributedDataParallel(model, device_ids=device_ids) if ddp.world > 1 else model
    micro_per_epoch = math.ceil(len(train_examples) / (config.batch_size * ddp.world))
    steps_per_epoch = max(1, micro_per_epoch // config.grad_accumulation)
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(config.warmup_ratio * total_steps), total_steps
    )
    task = _TeacherTask(
        config,
        model,
        wrapped,
        head,
        tokenizer.pad_token_id,
        train_examples,
        dev_examples,
        dev_pairs,
        ddp,
        setup,
        steps_per_epoch,
    )
    config.output_dir.mkdir(parents=True, exist_ok=True)
    loop = TrainingLoop(
        model,
        optimizer,
        scheduler,
        setup,
        LoopSettings(
            max_steps=total_steps,
            grad_accum=config.grad_accumulation,
            eval_every=config.eval_every or steps_per_epoch,
            patience=config.patience,
            description="teacher train",
            resume_dir=config.output_dir / RESUME_DIR,
            # Kept: a finished run can be continued for more epochs (``--resume``).
            keep_resume_state=True,
            write_resume_state=ddp.main,
            progress=ddp.main,
        ),
    )
    if config.resume:
        if loop.resume(task):
            console.print(
                f"resumed from {loop.resume_path} at step {loop.state.step}/{total_steps}"
            )
        else:
            console.print(f"no checkpoint at {loop.resume_path}; starting from scratch")
    run = loop.run(task)

    dev_targets = task.dev_targets
    model.load_state_dict(task.best_state, strict=False)
    logits = task.best_logits if task.best_logits is not None else task.dev_logits()
    temperature = fit_temperature(logits, dev_targets)
    calibrated = grade_metrics(dev_pairs, logits / temperature, dev_targets)
    uncalibrated = grade_metrics(dev_pairs, logits, dev_targets)
    info = {
        "name": config.name,
        "kind": config.kind,
        "backbone": str(config.backbone),
        "template": template,
        "max_length": config.max_length,
        "temperature": temperature,
        "rationale_heads": rationale_heads,
        "calibration": {
            "method": "temperature scaling on dev (soft cross-entropy)",
            "dev_pairs": len(dev_pairs),
            "dev_nll_before": uncalibrated["nll"],
            "dev_nll_after": calibrated["nll"],
            "dev_ece_before": uncalibrated["ece"],
            "dev_ece_after": calibrated["ece"],
        },
        "dev": calibrated,
        "history": run.state.history,
        "train_pairs": len(train_pairs),
        "steps": run.state.step,
    }
    if ddp.main:
        save(model, tokenizer, config, info)
    if ddp.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return info


def finished_run(config: TeacherTrainConfig) -> dict[str, Any] | None:
    """The summary (``teacher.json``) of a finished run in ``config.output_dir`` that
    trained with the same settings as ``config``, or None: a bench or a re-run can keep
    a teacher that took an hour on CPU instead of training it again. ``save`` writes
    ``teacher.json`` last, so an interrupted run is never taken for a finished one."""
    out = config.output_dir
    if not (out / TEACHER_JSON).exists() or not (out / CONFIG_FILE).exists():
        return None
    saved = TeacherTrainConfig(**yaml.safe_load((out / CONFIG_FILE).read_text()))
    if saved.model_dump(exclude=_NOT_TRAINING) != config.model_dump(exclude=_NOT_TRAINING):
        return None
    return read_teacher_spec(out).model_dump(mode="json")


def save(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: TeacherTrainConfig,
    info: dict[str, Any],
) -> None:
    """HF save_pretrained of the (LoRA-merged) model + tokenizer, then teacher.json."""
    if config.lora:
        model = model.merge_and_unload()
    out = config.output_dir
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config.dump_yaml(out / CONFIG_FILE)
    identity = {k: info[k] for k in ("name", "kind", "template", "max_length", "temperature")}
    info["version"] = weights_digest(out, identity)
    write_teacher_spec(TeacherSpec.model_validate(info), out)
    console.print(
        f"teacher {info['name']}@{info['version']} -> {out}  "
        f"dev ndcg@10 {info['dev']['ndcg@10']:.4f} acc {info['dev']['accuracy']:.4f} "
        f"T={info['temperature']:.3f}"
    )


if __name__ == "__main__":
    from training.teacher.cli import train_command

    typer.run(train_command)
