"""Label (query, product) pairs with a trained teacher checkpoint.

:class:`TeacherLabeler` is what the teacher-labeling service and offline jobs call, and it
is a ``Scorer`` so ``relkd eval`` can rank with a teacher checkpoint directly.

Batching packs pairs by a *token budget*: pairs are sorted by tokenised length and cut
into batches whose padded size (rows x longest row) stays under ``max_tokens``, so short
pairs travel in large batches and long ones in small ones; results come back in input
order.

Determinism: a label must not depend on which other pairs shared its batch, yet padding
changes the order of floating-point reductions (by ~1e-7). Probabilities are therefore
rounded to :data:`PROB_DECIMALS` decimals after the softmax, far above that noise and far
below any difference that matters for ranking or distillation; the expected score is
computed from the rounded probabilities. (The rounded four may sum to 1 +- 2e-4.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from contracts.artifacts import TeacherSpec, read_teacher_spec
from contracts.schema import NUM_GRADES, Match
from training.loop import resolve_precision
from training.teacher import explain
from training.teacher.explain import Rationale
from training.teacher.modeling import (
    load_causal_lm,
    load_classifier,
    load_tokenizer,
    resolve_device,
)
from training.teacher.templates import render

PROB_DECIMALS = 4
GRADE_VALUES = np.arange(NUM_GRADES, dtype=np.float64)

__all__ = ["PROB_DECIMALS", "LabelerStats", "Rationale", "TeacherLabel", "TeacherLabeler"]

Pair = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True)
class TeacherLabel:
    """One pair's soft label: p(grade) for grades 0..3, its expectation, and the rationale."""

    grade_probs: tuple[float, float, float, float]
    expected_score: float
    rationale: Rationale | None = None

    @property
    def category_match(self) -> Match:
        return self.rationale.category_match if self.rationale else Match.NOT_STATED

    @property
    def brand_match(self) -> Match:
        return self.rationale.brand_match if self.rationale else Match.NOT_STATED

    @property
    def attribute_match(self) -> Match:
        return self.rationale.attribute_match if self.rationale else Match.NOT_STATED


@dataclass
class LabelerStats:
    """Counters since the labeler was created (exported as metrics by the service)."""

    pairs: int = 0
    batches: int = 0
    explained: int = 0
    # Generations that could not be parsed (or had no grade token) and were labeled by
    # the classifier path instead.
    malformed_generations: int = 0
    last_malformed: list[str] = field(default_factory=list)


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> Iterator[list[int]]:
    """Indices grouped into length-sorted batches with rows x longest <= max_tokens.

    A single pair longer than the budget still forms its own batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batch: list[int] = []
    for index in order:
        if batch and (len(batch) + 1) * lengths[index] > max_tokens:
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _pad(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, ...]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


class TeacherLabeler:
    """A loaded teacher checkpoint that turns pairs into :class:`TeacherLabel` s."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        spec: TeacherSpec,
        device: torch.device,
        max_tokens: int = 16384,
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens: must be positive, got {max_tokens}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self.max_tokens = max_tokens
        self.name = spec.name
        self.version = spec.version
        self.kind = spec.kind
        self.template = spec.template
        self.max_length = spec.max_length
        self.max_new_tokens = spec.max_new_tokens
        self.temperature = spec.temperature
        self.stats = LabelerStats()
        self._grade_tokens = (
            explain.GradeTokens.from_tokenizer(tokenizer) if self.kind == "generative" else None
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", max_tokens: int = 16384
    ) -> TeacherLabeler:
        path = Path(path)
        spec = read_teacher_spec(path)
        torch_device = resolve_device(device)
        dtype = resolve_precision("auto", torch_device)
        tokenizer = load_tokenizer(path)
        loader = load_causal_lm if spec.kind == "generative" else load_classifier
        model = loader(path, tokenizer, dtype).to(torch_device)
        return cls(model, tokenizer, spec, torch_device, max_tokens)

    # -- labeling ---------------------------------------------------------------------

    def label(self, pairs: Sequence[Pair], explain: bool = False) -> list[TeacherLabel]:
        """Soft labels of ``pairs`` (query, product row) in input order.

        ``explain=True`` asks a generative teacher for its step-by-step rationale; a
        classifier teacher has none and returns ``rationale=None``.
        """
        if not pairs:
            return []
        self.stats.pairs += len(pairs)
        if explain and self.kind == "generative":
            return self._label_explained(pairs)
        return [self._to_label(row) for row in self._classifier_logits(pairs)]

    def grade_probs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """Scorer protocol: [n, NUM_GRADES] grade distributions."""
        labels = self.label(list(zip(queries, products, strict=True)))
        return np.array([label.grade_probs for label in labels], dtype=np.float64)

    def score_pairs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """Scorer protocol: expected grade per pair, the teacher's ranking score."""
        labels = self.label(list(zip(queries, products, strict=True)))
        return np.array([label.expected_score for label in labels], dtype=np.float64)

    def _to_label(
        self, grade_logits: torch.Tensor, rationale: Rationale | None = None
    ) -> TeacherLabel:
        probs = torch.softmax(grade_logits.double() / self.temperature, dim=-1).numpy()
        rounded = np.round(probs, PROB_DECIMALS)
        expected = round(float(rounded @ GRADE_VALUES), PROB_DECIMALS)
        return TeacherLabel(tuple(float(p) for p in rounded), expected, rationale)

    def _classifier_inputs(self, pairs: Sequence[Pair]) -> list[list[int]]:
        if self._grade_tokens is None:
            texts = [render(self.template, query, product) for query, product in pairs]
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
            return list(encoded["input_ids"])
        rows = []
        for query, product in pairs:
            prompt = explain.direct_prompt(self.template, query, product)
            seq = explain.sft_sequence(
                self.tokenizer, self._grade_tokens, prompt, "", 0, self.max_length
            )
            # Everything up to and including "Grade:"; the next token is the grade.
            rows.append(seq.input_ids[: seq.grade_position + 1])
        return rows

    @torch.no_grad()
    def _classifier_logits(self, pairs: Sequence[Pair]) -> torch.Tensor:
        """Un-tempered grade logits [n, NUM_GRADES] from one forward pass per batch."""
        inputs = self._classifier_inputs(pairs)
        logits = torch.empty((len(pairs), NUM_GRADES), dtype=torch.float64)
        for batch in token_budget_batches([len(r) for r in inputs], self.max_tokens):
            rows = [inputs[i] for i in batch]
            ids, mask = _pad(rows, self.tokenizer.pad_token_id, left=False)
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
            if self._grade_tokens is None:
                batch_logits = out.logits
            else:
                last = torch.tensor([len(r) - 1 for r in rows], device=self.device)
                grade_ids = torch.tensor(self._grade_tokens.grades, device=self.device)
                batch_logits = out.logits[torch.arange(len(rows)), last][:, grade_ids]
            logits[batch] = batch_logits.double().cpu()
            self.stats.batches += 1
        return logits

    @torch.no_grad()
    def _label_explained(self, pairs: Sequence[Pair]) -> list[TeacherLabel]:
        assert self._grade_tokens is not None
        tokens = self._grade_tokens
        prompt_budget = max(8, self.max_length - self.max_new_tokens)
        prompts = [
            self.tokenizer(
                explain.step_by_step_prompt(self.template, query, product),
                truncation=True,
                max_length=prompt_budget,
            )["input_ids"]
            for query, product in pairs
        ]
        labels: list[TeacherLabel | None] = [None] * len(pairs)
        malformed: list[int] = []
        lengths = [len(p) + self.max_new_tokens for p in prompts]
        eos = self.tokenizer.eos_token_id
        for batch in token_budget_batches(lengths, self.max_tokens):
            # Generation pads on the left; generate() derives positions from the mask.
            ids, mask = _pad([prompts[i] for i in batch], self.tokenizer.pad_token_id, left=True)
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=eos,
            )
            self.stats.batches += 1
            generated = out.sequences[:, ids.shape[1] :].cpu().tolist()
            for row, index in enumerate(batch):
                new = generated[row]
                if eos is not None and eos in new:
                    new = new[: new.index(eos)]
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                parsed = explain.parse_judgment(text)
                step = tokens.find_grade_step(new)
                if parsed.rationale is None or step is None:
                    reason = parsed.error or "grade token not found after 'Grade:'"
                    self.stats.last_malformed = [*self.stats.last_malformed[-9:], reason]
                    malformed.append(index)
                    continue
                grade_logits = out.logits[step][row, list(tokens.grades)].cpu()
                labels[index] = self._to_label(grade_logits, parsed.rationale)
        self.stats.explained += len(pairs) - len(malformed)
        self.stats.malformed_generations += len(malformed)
        if malformed:
            fallback = self._classifier_logits([pairs[i] for i in malformed])
            for index, row in zip(malformed, fallback, strict=True):
                labels[index] = self._to_label(row)
        return [label for label in labels if label is not None]
