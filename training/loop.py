"""The optimisation loop both trainers run (student/train.py and teacher/train.py).

A trainer is a :class:`Task`: its micro-batches, its loss and its evaluation. This module
owns the rest: seeding, device and mixed precision, gradient accumulation, scaling and
clipping, the optimizer and scheduler steps, resume state, early stopping, metric
logging and the progress bar.

One optimizer step = ``grad_accum`` micro-batches. Every ``eval_every`` steps (and at
the last) the task evaluates; a better score calls :meth:`Task.on_best`, ``patience``
evaluations without one stop the run (0 never stops), and ``resume_dir`` receives what
a resumed run needs: the trained parameters, optimizer, scheduler, gradient scaler,
RNG states, the loop's counters and the task's own :meth:`Task.extra_state`.

Kept off the GPU's critical path (issue 17):

* no host synchronisation per step: losses are accumulated on the device and read once
  every ``log_every`` steps and at evaluations, when the metric rows are written;
* on CUDA the next step's micro-batches are prepared (tokenized, collated, pinned) on a
  background thread while the current step runs (on a CPU that thread would only
  compete with torch's threads for the same cores);
* on CUDA, training attention avoids the cuDNN SDPA backend, which builds a plan per
  padded shape (19 ms of CPU a call, measured in ../shared/GPU-FINDINGS.md), and padded
  lengths are rounded up to :attr:`DeviceSetup.pad_multiple` so shapes repeat.
"""

from __future__ import annotations

import contextlib
import csv
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.nn.attention import SDPBackend, sdpa_kernel

Precision = Literal["auto", "bf16", "fp16", "fp32"]
RESUME_STATE = "trainer_state.pt"
# Padded lengths on a GPU are multiples of this, so attention kernels see few shapes.
GPU_PAD_MULTIPLE = 16
# Attention backends for training on CUDA: all but cuDNN, whose per-shape plans cost
# far more CPU than its kernels save.
TRAINING_SDPA_BACKENDS = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]

console = Console(stderr=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """The autocast dtype; half precision only where the hardware does it well (GPU)."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision != "fp32" and device.type != "cuda":
        raise ValueError(f"precision: {precision} needs a GPU; this run is on {device}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


@dataclass(frozen=True)
class DeviceSetup:
    """Where a run computes and in which precision (``float32`` = no autocast)."""

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def resolve(cls, device: str | torch.device | None, precision: Precision) -> DeviceSetup:
        """``device`` None picks CUDA when there is one; ``precision`` as resolve_precision."""
        chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(chosen, resolve_precision(precision, chosen))

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pad_multiple(self) -> int:
        """Round padded lengths up to this: fewer shapes on a GPU, no waste on a CPU."""
        return GPU_PAD_MULTIPLE if self.cuda else 1

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The forward pass's context: mixed precision, and on CUDA the SDPA backends."""
        stack = contextlib.ExitStack()
        if self.cuda:
            stack.enter_context(sdpa_kernel(TRAINING_SDPA_BACKENDS))
        if self.dtype != torch.float32:
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=self.dtype))
        return stack

    def grad_scaler(self) -> torch.amp.GradScaler:
        # bf16 and fp32 need no loss scaling; fp16 (older GPUs) does.
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def pin(tensors: Any) -> Any:
    """Page-locked copies of a (nested) mapping of CPU tensors, so copies to the GPU overlap."""
    if isinstance(tensors, torch.Tensor):
        return tensors.pin_memory()
    if isinstance(tensors, dict):
        return {key: pin(value) for key, value in tensors.items()}
    return tensors


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trained parameters only (all weights, or LoRA adapters + heads)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


class StepLoss(NamedTuple):
    """A micro-batch's loss, its logged parts (summing to it) and its size in examples."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    size: int


@dataclass(frozen=True)
class Evaluation:
    score: float  # higher is better: early stopping and the best checkpoint follow it
    metrics: dict[str, float]  # logged with the step, kept in the history


class Task(Protocol):
    """What a trainer supplies to :class:`TrainingLoop`."""

    def micro_batches(self, step: int) -> Sequence[Any]:
        """The (CPU, pinned on CUDA) micro-batches of optimizer step ``step`` (0-based).

        A pure function of ``step``: it runs one step ahead on a background thread, and
        a resumed run asks for the steps it has not done.
        """

    def loss(self, batch: Any) -> StepLoss:
        """Forward one micro-batch (moving it to the device) and return its loss."""

    def evaluate(self) -> Evaluation:
        """Evaluate the model as it is now; leave it in train mode."""

    def on_best(self, step: int, evaluation: Evaluation) -> None:
        """Keep the model as the best so far (a checkpoint, a copy in memory)."""

    def extra_state(self) -> dict[str, Any]:
        """The task's own resume state (beyond the loop's)."""

    def load_extra_state(self, state: dict[str, Any]) -> None: ...


@dataclass
class LoopState:
    """The loop's counters; saved with the resume state."""

    step: int = 0
    best_score: float = -math.inf
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class LoopSettings:
    max_steps: int
    grad_accum: int
    eval_every: int
    patience: int  # evaluations without improvement before stopping; 0 never stops
    description: str
    size_unit: str = "examples"  # what StepLoss.size counts: names the rate column
    resume_dir: Path | None = None  # where the resume state goes; None keeps none
    keep_resume_state: bool = False  # False: removed when the run ends
    write_resume_state: bool = True  # False on all but one distributed rank
    log_every: int = 25  # steps between host reads of the losses (one sync each)
    prefetch: bool | None = None  # batches prepared on a worker thread; None: on CUDA only
    clip_norm: float = 1.0
    progress: bool = True


@dataclass(frozen=True)
class LoopResult:
    state: LoopState
    examples: int  # examples trained on in this process's run (after a resume: since it)
    train_seconds: float  # wall time of the optimizer steps, evaluations excluded

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.train_seconds if self.train_seconds else 0.0


class MetricsLog:
    """Per-step metrics as CSV (appends on resume)."""

    def __init__(self, path: Path, fields: Sequence[str], *, append: bool) -> None:
        fresh = not (append and path.exists())
        self._file = path.open("w" if fresh else "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=list(fields), extrasaction="ignore")
        if fresh:
            self._writer.writeheader()

    def write(self, row: dict[str, float]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _Prefetcher:
    """Prepares step ``n + 1``'s micro-batches on a worker thread while step ``n`` runs
    (``background``), or each step's when it is taken.

    :meth:`idle` waits for the worker before an evaluation, so the two never use a
    (not thread-safe) tokenizer at once.
    """

    def __init__(
        self, prepare: Callable[[int], Sequence[Any]], first: int, last: int, background: bool
    ) -> None:
        self._prepare, self._last = prepare, last
        # No worker: submit() runs the call at once, in the training thread.
        self._pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") if background else None
        )
        self._next: Future[Sequence[Any]] | None = None
        self._submit(first)

    def _submit(self, step: int) -> None:
        self._next = (
            self._pool.submit(self._prepare, step)
            if self._pool is not None and step < self._last
            else None
        )

    def take(self, step: int) -> Sequence[Any]:
        if self._pool is None:
            return self._prepare(step)
        assert self._next is not None, f"step {step} was not prefetched"
        batches = self._next.result()
        self._submit(step + 1)
        return batches

    def idle(self) -> None:
        if self._next is not None:
            self._next.exception()  # waits; an error surfaces when the step takes it

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Pending:
    """Steps done since the last host read: their on-device losses and host-side facts."""

    steps: list[int] = field(default_factory=list)
    parts: list[dict[str, torch.Tensor]] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    examples: int = 0


class TrainingLoop:
    """Runs a :class:`Task`'s optimisation with the given optimizer and scheduler."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        setup: DeviceSetup,
        settings: LoopSettings,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.setup = setup
        self.settings = settings
        self.scaler = setup.grad_scaler()
        self.state = LoopState()
        self._params = [p for p in model.parameters() if p.requires_grad]

    @property
    def resume_path(self) -> Path | None:
        resume_dir = self.settings.resume_dir
        return resume_dir / RESUME_STATE if resume_dir is not None else None

    def resume(self, task: Task) -> bool:
        """Load the resume state if there is one; True when the run continues from it."""
        path = self.resume_path
        if path is None or not path.exists():
            return False
        saved = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(saved["model"], strict=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        # A resumed run trains on, even one that had stopped early (e.g. given more epochs).
        self.state = LoopState(**{**saved["loop"], "stopped_early": False})
        task.load_extra_state(saved["task"])
        return True

    def _save_resume_state(self, task: Task) -> None:
        path = self.resume_path
        if path is None or not self.settings.write_resume_state:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "model": trainable_state(self.model),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "loop": asdict(self.state),
                "task": task.extra_state(),
            },
            path,
        )

    def _optimizer_step(self, task: Task, batches: Sequence[Any], pending: _Pending) -> None:
        accum = self.settings.grad_accum
        parts: dict[str, torch.Tensor] = {}
        for batch in batches:
            out = task.loss(batch)
            self.scaler.scale(out.loss / accum).backward()
            # float64 on the device: the logged sum is as exact as adding Python floats.
            for name, value in out.parts.items():
                part = value.detach().double() / accum
                parts[name] = parts[name] + part if name in parts else part
            pending.examples += out.size
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self._params, self.settings.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step += 1
        pending.steps.append(self.state.step)
        pending.parts.append(parts)
        pending.lrs.append(self.scheduler.get_last_lr()[0])

    def _read(self, pending: _Pending, started: float) -> tuple[list[dict[str, float]], float]:
        """The pending steps' metric rows and their wall time: one device-to-host copy,
        which waits for the steps' GPU work, so the time is the steps' real time."""
        names = list(pending.parts[0])
        values = torch.stack([torch.stack([p[n] for n in names]) for p in pending.parts])
        values_list = values.tolist()
        seconds = time.perf_counter() - started
        rate = pending.examples / seconds if seconds > 0 else 0.0
        rows = []
        for step, lr, row_values in zip(pending.steps, pending.lrs, values_list, strict=True):
            parts = dict(zip(names, row_values, strict=True))
            rows.append(
                {
                    "step": step,
                    "loss": sum(parts.values()),
                    **parts,
                    "lr": lr,
                    f"{self.settings.size_unit}_per_s": rate,
                }
            )
        return rows, seconds

    def _evaluate(self, task: Task) -> Evaluation:
        evaluation = task.evaluate()
        state = self.state
        state.history.append({"step": state.step, **evaluation.metrics})
        if evaluation.score > state.best_score:
            state.best_score, state.best_step, state.bad_evals = evaluation.score, state.step, 0
            task.on_best(state.step, evaluation)
        else:
            state.bad_evals += 1
        patience = self.settings.patience
        state.stopped_early = bool(patience) and state.bad_evals >= patience
        last = state.stopped_early or state.step >= self.settings.max_steps
        if self.settings.keep_resume_state or not last:
            self._save_resume_state(task)
        return evaluation

    def run(self, task: Task, metrics_log: MetricsLog | None = None) -> LoopResult:
        """Train until ``max_steps`` or an early stop; one row per step to ``metrics_log``."""
        settings, state = self.settings, self.state
        examples, train_seconds = 0, 0.0
        background = self.setup.cuda if settings.prefetch is None else settings.prefetch
        prefetch = _Prefetcher(task.micro_batches, state.step, settings.max_steps, background)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            disable=not settings.progress,
        )
        try:
            with progress:
                bar = progress.add_task(
                    settings.description,
                    total=settings.max_steps,
                    completed=state.step,
                    status="",
                )
                pending, started = _Pending(), time.perf_counter()
                while state.step < settings.max_steps and not state.stopped_early:
                    self._optimizer_step(task, prefetch.take(state.step), pending)
                    progress.advance(bar)
                    evaluate = (
                        state.step % settings.eval_every == 0 or state.step == settings.max_steps
                    )
                    if not evaluate and state.step % settings.log_every:
                        continue
                    rows, seconds = self._read(pending, started)
                    train_seconds += seconds
                    examples += pending.examples
                    status = f"loss {rows[-1]['loss']:.3f}"
                    if evaluate:
                        prefetch.idle()
                        rows[-1].update(self._evaluate(task).metrics)
                    if state.history:
                        status += f"  best {state.best_score:.4f} (step {state.best_step})"
                    progress.update(bar, status=status)
                    if metrics_log is not None:
                        for row in rows:
                            metrics_log.write(row)
                    pending, started = _Pending(), time.perf_counter()
        finally:
            prefetch.close()
        if state.stopped_early and settings.progress:
            console.print(
                f"early stop at step {state.step}: no gain in {state.bad_evals} evaluations"
            )
        if not settings.keep_resume_state and settings.resume_dir is not None:
            shutil.rmtree(settings.resume_dir, ignore_errors=True)
        return LoopResult(state=state, examples=examples, train_seconds=train_seconds)
