"""The student training loop: `relkd student train`, also the Kubernetes Job's entry point.

One optimizer step = ``grad_accum`` micro-batches from the :class:`QueryPairSampler`.
Each micro-batch encodes the unique examples of its pairs once; Margin-MSE reads the
pairs, the pointwise losses read the examples. Dev NDCG@10 is measured every
``eval_every`` steps: an improvement overwrites the best checkpoint in ``output_dir``,
``patience`` evaluations without one stop the run, and ``output_dir/last`` holds what a
``--resume`` needs (model, optimizer, scheduler, step) until the run finishes.

Run as ``python -m training.student.train --config student.yaml``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import get_linear_schedule_with_warmup

from contracts import schema
from contracts.text import product_text
from training.data.storage import read_table
from training.eval import metrics
from training.student.checkpoint import load_model
from training.student.config import StudentKind, StudentTrainConfig
from training.student.examples import Example, QueryPairSampler, load_training_set
from training.student.losses import Targets, build_loss
from training.student.models import CrossEncoderStudent, StudentModel, TwoTowerStudent
from training.student.models.base import to_device

LAST = "last"
TRAINER_STATE = "trainer_state.pt"
METRICS_CSV = "metrics.csv"
LOCK_FILE = ".lock"
SUMMARY_JSON = "train_summary.json"
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    model: StudentModel, examples: list[Example], pairs: np.ndarray
) -> tuple[dict[str, Any], Targets]:
    """Tokenized unique examples of ``pairs`` and their targets, pairs re-indexed."""
    unique, inverse = np.unique(pairs, return_inverse=True)
    chosen = [examples[i] for i in unique]
    inputs = model.tokenize([e.query for e in chosen], [e.product_text for e in chosen])
    targets = Targets(
        scores=torch.tensor([e.score for e in chosen], dtype=torch.float32),
        grade_probs=torch.from_numpy(np.stack([e.grade_probs for e in chosen])),
        rationale=torch.tensor([e.rationale for e in chosen], dtype=torch.long),
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


class MetricsLog:
    """Per-step metrics as CSV (appends on resume)."""

    FIELDS = ("step", "loss", "margin_mse", "mse", "kl", "cot", "lr", "pairs_per_s", "dev_ndcg10")

    def __init__(self, path: Path, *, append: bool) -> None:
        fresh = not (append and path.exists())
        self._file = path.open("w" if fresh else "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.FIELDS, extrasaction="ignore")
        if fresh:
            self._writer.writeheader()

    def write(self, row: dict[str, float]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


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


def _train(config: StudentTrainConfig) -> TrainResult:
    seed_everything(config.seed)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_amp = config.amp and device.type == "cuda"
    # bf16 needs no loss scaling; fp16 (older GPUs) does.
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    out = config.output_dir
    last = out / LAST
    resuming = config.resume and (last / TRAINER_STATE).exists()

    training_set = load_training_set(config)
    sampler = QueryPairSampler(
        training_set.examples,
        queries_per_batch=config.queries_per_batch,
        pairs_per_query=config.pairs_per_query,
        min_margin=config.min_margin,
        seed=config.seed,
    )
    dev = DevSet(config.dataset_dir, config.text_fields, config.eval_max_queries)

    model = load_model(last) if resuming else build_model(config)
    model.to(device).train()
    if config.freeze_embeddings:
        for embeddings in model.word_embeddings():
            embeddings.requires_grad_(False)
    loss_fn = build_loss(config.loss_weights)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.lr, config.head_lr_scale),
        weight_decay=config.weight_decay,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * config.max_steps), config.max_steps
    )
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    state = {"step": 0, "best_ndcg": -1.0, "best_step": 0, "bad_evals": 0}
    if resuming:
        saved = torch.load(last / TRAINER_STATE, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = saved["state"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(config.model_dump_json(indent=2) + "\n")
    log = MetricsLog(out / METRICS_CSV, append=resuming)

    pairs_done, train_seconds, stopped_early = 0, 0.0, False
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        disable=not config.progress,
    ) as progress:
        bar = progress.add_task(
            f"train {config.kind}", total=config.max_steps, completed=state["step"], status=""
        )
        while state["step"] < config.max_steps:
            started = time.perf_counter()
            parts_sum: dict[str, float] = {}
            step_pairs = 0
            for micro in range(config.grad_accum):
                pairs = sampler.batch(state["step"] * config.grad_accum + micro)
                inputs, targets = batch_inputs(model, training_set.examples, pairs)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    output = model(to_device(inputs, device))
                total, parts = loss_fn(output, targets.to(device))
                scaler.scale(total / config.grad_accum).backward()
                for name, value in parts.items():
                    parts_sum[name] = parts_sum.get(name, 0.0) + value / config.grad_accum
                step_pairs += len(pairs)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state["step"] += 1
            elapsed = time.perf_counter() - started
            pairs_done += step_pairs
            train_seconds += elapsed

            row: dict[str, float] = {
                "step": state["step"],
                "loss": sum(parts_sum.values()),
                **parts_sum,
                "lr": scheduler.get_last_lr()[0],
                "pairs_per_s": step_pairs / elapsed,
            }
            if state["step"] % config.eval_every == 0 or state["step"] == config.max_steps:
                ndcg = dev.ndcg(model, device)
                row["dev_ndcg10"] = ndcg
                if ndcg > state["best_ndcg"]:
                    state.update(best_ndcg=ndcg, best_step=state["step"], bad_evals=0)
                    model.save(out, name=config.name, version=config.version)
                else:
                    state["bad_evals"] += 1
                stopped_early = state["bad_evals"] >= config.patience
                if not stopped_early and state["step"] < config.max_steps:
                    _save_last(last, model, config, optimizer, scheduler, scaler, state)
            log.write(row)
            progress.update(
                bar,
                advance=1,
                status=f"loss {row['loss']:.3f} best ndcg@10 {max(state['best_ndcg'], 0):.4f}",
            )
            if stopped_early:
                break
    log.close()
    shutil.rmtree(last, ignore_errors=True)

    result = TrainResult(
        output_dir=str(out),
        kind=str(config.kind),
        steps=state["step"],
        best_step=state["best_step"],
        best_dev_ndcg10=state["best_ndcg"],
        stopped_early=stopped_early,
        train_examples=len(training_set.examples),
        train_queries=sampler.num_queries,
        human_queries=training_set.human_queries,
        teacher_queries=training_set.teacher_queries,
        pairs_per_s=pairs_done / train_seconds if train_seconds else 0.0,
        train_seconds=train_seconds,
    )
    (out / SUMMARY_JSON).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def _save_last(
    last: Path,
    model: StudentModel,
    config: StudentTrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    state: dict[str, Any],
) -> None:
    model.save(last, name=config.name, version=config.version)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "state": dict(state),
        },
        last / TRAINER_STATE,
    )


if __name__ == "__main__":
    from training.student.cli import train_main

    train_main()
