"""Label (query, product) pairs with a trained teacher checkpoint.

:class:`TeacherLabeler` is what the teacher-labeling service and offline jobs call, and it
is a ``Scorer`` so ``relkd eval`` can rank with a teacher checkpoint directly.

Batching packs pairs by a *token budget*: pairs are sorted by tokenised length and cut
into batches whose padded size (rows x longest row) stays under ``max_tokens``, so short
pairs travel in large batches and long ones in small ones; results come back in input
order. The budget defaults to what the device's free memory holds
(:func:`device_token_budget`, measured when the labeler is built); a CPU keeps
:data:`CPU_TOKEN_BUDGET`. A decoder's forward pass computes vocabulary logits only at the
position it reads (the grade slot), not at every token.

A classifier trained with rationale heads (``TeacherSpec.rationale_heads``) gives every
label a rationale from the same forward pass: per field (category, brand, attribute
match) the softmax of its three head logits and the most likely value; it writes no text.

The explainable path (``explain=True``, generative teachers) never decodes free text: it
scores the closed set of values of each slot of the judgment (category, brand, attributes,
grade) by log-probability (see ``explain.py``): the prompts are encoded once, then each
slot is one short batched pass of its answer prefix on their key/value cache, so every
field comes with a distribution. A pair whose full-vocabulary argmax at some slot is not an
allowed value is counted as *off-schema* (free decoding would have left the format there);
its label is still the closed-set one.

Determinism: a label must not depend on which other pairs shared its batch, yet padding
changes the order of floating-point reductions (by ~1e-7). Probabilities are therefore
rounded to :data:`PROB_DECIMALS` decimals after the softmax, far above that noise and far
below any difference that matters for ranking or distillation; the expected score is
computed from the rounded probabilities. (The rounded four may sum to 1 +- 2e-4.)
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from contracts.artifacts import TeacherSpec, read_teacher_spec
from contracts.schema import NUM_GRADES, NUM_MATCH, RATIONALE_FIELDS, RATIONALE_PROBS_FIELDS, Match
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
CPU_TOKEN_BUDGET = 16384
# Share of the free device memory a batch's activations may take (the rest: the
# allocator's fragmentation, other tenants, the CUDA context's growth).
FREE_MEMORY_SHARE = 0.5
GRADE_VALUES = np.arange(NUM_GRADES, dtype=np.float64)

__all__ = [
    "CPU_TOKEN_BUDGET",
    "PROB_DECIMALS",
    "LabelerStats",
    "Rationale",
    "TeacherLabel",
    "TeacherLabeler",
    "device_token_budget",
]

Pair = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True)
class TeacherLabel:
    """One pair's soft label: p(grade) for grades 0..3, its expectation, and the rationale."""

    grade_probs: tuple[float, float, float, float]
    expected_score: float
    rationale: Rationale | None = None

    def rationale_columns(self) -> dict[str, Any]:
        """The rationale as ``teacher_labels`` columns (schema.TEACHER_LABELS): the value
        and the distribution per field, None where the label has none (a missing target,
        never NOT_STATED)."""
        rationale = self.rationale
        if rationale is None:
            return {name: None for name in (*RATIONALE_FIELDS, *RATIONALE_PROBS_FIELDS)}
        values = (rationale.category_match, rationale.brand_match, rationale.attribute_match)
        columns: dict[str, Any] = {}
        for i, (name, probs_name) in enumerate(
            zip(RATIONALE_FIELDS, RATIONALE_PROBS_FIELDS, strict=True)
        ):
            columns[name] = int(values[i])
            columns[probs_name] = None if rationale.probs is None else list(rationale.probs[i])
        return columns


@dataclass
class LabelerStats:
    """Counters since the labeler was created (exported as metrics by the service)."""

    pairs: int = 0
    batches: int = 0
    explained: int = 0
    # Explained pairs where free decoding would have left the judgment's schema (the
    # full-vocabulary argmax at a slot is no allowed value): the malformed share.
    malformed_generations: int = 0
    last_malformed: list[str] = field(default_factory=list)


def device_token_budget(model: PreTrainedModel, device: torch.device) -> int:
    """Tokens per batch that fit in ``FREE_MEMORY_SHARE`` of the device's free memory.

    Per token, a no-grad forward pass holds about one layer's activations at a time:
    the hidden state a few times over (residual, normed input, attention output, q/k/v)
    and the MLP's intermediate activations (gate, up, their product), in the model's
    dtype. A decoder also keeps every layer's keys and values of the batch's prompts
    while the explainable path runs its slot passes on them. Classifier heads and the
    grade slot's vocabulary logits are per row, not per token, and small. A CPU has no
    such limit worth sizing: it gets CPU_TOKEN_BUDGET.
    """
    if device.type != "cuda":
        return CPU_TOKEN_BUDGET
    free_bytes, _ = torch.cuda.mem_get_info(device)
    config = model.config
    hidden = int(config.hidden_size)
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    dtype_bytes = next(model.parameters()).element_size()
    kv_cache = 0
    if hasattr(config, "num_key_value_heads"):  # decoders with a key/value cache
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        kv_cache = 2 * int(config.num_hidden_layers) * int(config.num_key_value_heads) * head_dim
    per_token = dtype_bytes * (8 * hidden + 3 * intermediate + kv_cache)
    return max(CPU_TOKEN_BUDGET, int(free_bytes * FREE_MEMORY_SHARE) // per_token)


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
        max_tokens: int | None = None,
    ) -> None:
        if max_tokens is None:
            max_tokens = device_token_budget(model, device)
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
        self.temperature = spec.temperature
        self.stats = LabelerStats()
        self._grade_tokens: explain.GradeTokens | None = None
        self._schema: explain.JudgmentSchema | None = None
        if self.kind == "generative":
            self._grade_tokens = explain.GradeTokens.from_tokenizer(tokenizer)
            self._schema = explain.JudgmentSchema.from_tokenizer(tokenizer, self._grade_tokens)
        # transformers 5.2x renamed the decoder's ``past_key_values`` argument ``cache``.
        forward = inspect.signature(model.base_model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward else "past_key_values"

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", max_tokens: int | None = None
    ) -> TeacherLabeler:
        """``max_tokens`` None: sized from the device's free memory (device_token_budget)."""
        path = Path(path)
        spec = read_teacher_spec(path)
        torch_device = resolve_device(device)
        dtype = resolve_precision("auto", torch_device)
        tokenizer = load_tokenizer(path)
        if spec.kind == "generative":
            model = load_causal_lm(path, tokenizer, dtype)
        else:
            model = load_classifier(path, tokenizer, dtype, spec.rationale_heads)
        model = model.to(torch_device)
        return cls(model, tokenizer, spec, torch_device, max_tokens)

    # -- labeling ---------------------------------------------------------------------

    def label(self, pairs: Sequence[Pair], explain: bool = False) -> list[TeacherLabel]:
        """Soft labels of ``pairs`` (query, product row) in input order.

        ``explain=True`` asks a generative teacher for its step-by-step rationale; a
        classifier with rationale heads always gives one, one without returns
        ``rationale=None``.
        """
        if not pairs:
            return []
        self.stats.pairs += len(pairs)
        if explain and self.kind == "generative":
            return self._label_explained(pairs)
        return [
            self._to_label(row[:NUM_GRADES], self._head_rationale(row[NUM_GRADES:]))
            for row in self._classifier_logits(pairs)
        ]

    def score_pairs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """Scorer protocol: expected grade per pair, the teacher's ranking score."""
        return self.score_and_grade_probs(queries, products)[0]

    def score_and_grade_probs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """GradeScorer protocol: expected grades and [n, NUM_GRADES] distributions."""
        labels = self.label(list(zip(queries, products, strict=True)))
        return (
            np.array([label.expected_score for label in labels], dtype=np.float64),
            np.array([label.grade_probs for label in labels], dtype=np.float64).reshape(
                -1, NUM_GRADES
            ),
        )

    def _to_label(
        self, grade_logits: torch.Tensor, rationale: Rationale | None = None
    ) -> TeacherLabel:
        probs = torch.softmax(grade_logits.double() / self.temperature, dim=-1).numpy()
        rounded = np.round(probs, PROB_DECIMALS)
        expected = round(float(rounded @ GRADE_VALUES), PROB_DECIMALS)
        return TeacherLabel(tuple(float(p) for p in rounded), expected, rationale)

    @staticmethod
    def _head_rationale(logits: torch.Tensor) -> Rationale | None:
        """The rationale heads' logits [fields * NUM_MATCH] as a Rationale (None: no heads)."""
        if logits.numel() == 0:
            return None
        probs = torch.softmax(logits.double().view(len(RATIONALE_FIELDS), NUM_MATCH), -1)
        rounded = np.round(probs.numpy(), PROB_DECIMALS)
        category, brand, attribute = (Match(int(row.argmax())) for row in rounded)
        return Rationale(
            category_match=category,
            brand_match=brand,
            attribute_match=attribute,
            text="",
            probs=tuple(tuple(float(p) for p in row) for row in rounded),
        )

    def _classifier_inputs(self, pairs: Sequence[Pair]) -> list[list[int]]:
        if self._grade_tokens is None:
            texts = [render(self.template, query, product) for query, product in pairs]
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
            return list(encoded["input_ids"])
        prefix = list(self._grade_tokens.prefix)
        # Everything up to and including "Grade:"; the next token is the grade.
        return [
            [*self._prompt(query, product, step_by_step=False), *prefix] for query, product in pairs
        ]

    def _prompt(self, query: str, product: Mapping[str, Any], step_by_step: bool) -> list[int]:
        return explain.prompt_ids(
            self.tokenizer, self.template, query, product, step_by_step, self.max_length
        )

    def _last_logits(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """A decoder's next-token logits [rows, vocab] after each row's last token.

        Right-padded, and the LM head applied only at those positions: the full
        [rows, width, vocab] logits would be the largest tensor of the pass.
        """
        ids, mask = _pad(rows, self.tokenizer.pad_token_id, left=False)
        hidden = self.model.base_model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False
        ).last_hidden_state
        last = torch.tensor([len(r) - 1 for r in rows], device=self.device)
        return self.model.get_output_embeddings()(hidden[torch.arange(len(rows)), last])

    @torch.no_grad()
    def _classifier_logits(self, pairs: Sequence[Pair]) -> torch.Tensor:
        """Un-tempered grade logits [n, NUM_GRADES] from one forward pass per batch, then
        the rationale heads' logits where the classifier has them."""
        inputs = self._classifier_inputs(pairs)
        width = NUM_GRADES
        if self._grade_tokens is None:
            width = self.model.config.num_labels
        logits = torch.empty((len(pairs), width), dtype=torch.float64)
        for batch in token_budget_batches([len(r) for r in inputs], self.max_tokens):
            rows = [inputs[i] for i in batch]
            if self._grade_tokens is None:
                ids, mask = _pad(rows, self.tokenizer.pad_token_id, left=False)
                batch_logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).logits
            else:
                grade_ids = torch.tensor(self._grade_tokens.grades, device=self.device)
                batch_logits = self._last_logits(rows)[:, grade_ids]
            logits[batch] = batch_logits.double().cpu()
            self.stats.batches += 1
        return logits

    def _label_explained(self, pairs: Sequence[Pair]) -> list[TeacherLabel]:
        """Closed-set decoding: per slot, one batched pass scores every allowed value.

        Each token-budget batch of prompts is encoded once; every slot then runs only
        its answer prefix (a few tokens) against the prompts' key/value cache, instead
        of re-encoding the ~200-token prompt four times.
        """
        prompts = [self._prompt(query, product, step_by_step=True) for query, product in pairs]
        labels: dict[int, TeacherLabel] = {}  # by the pair's index
        reasons: list[str] = []
        for batch in token_budget_batches([len(p) for p in prompts], self.max_tokens):
            batch_labels, off_schema = self._explain_batch([prompts[i] for i in batch])
            labels.update(zip(batch, batch_labels, strict=True))
            reasons += [reason for reason in off_schema if reason is not None]
        self.stats.explained += len(pairs)
        self.stats.malformed_generations += len(reasons)
        self.stats.last_malformed = [*self.stats.last_malformed, *reasons][-10:]
        return [labels[i] for i in range(len(pairs))]

    @torch.no_grad()
    def _explain_batch(
        self, prompts: Sequence[Sequence[int]]
    ) -> tuple[list[TeacherLabel], list[str | None]]:
        """Labels of one batch of step-by-step prompts, and why each left the schema."""
        assert self._schema is not None
        ids, mask = _pad(prompts, self.tokenizer.pad_token_id, left=False)
        mask = mask.to(self.device)
        encoded = self.model.base_model(
            input_ids=ids.to(self.device), attention_mask=mask, use_cache=True
        )
        cache = getattr(encoded, self._cache_kwarg)  # the output field has the argument's name
        self.stats.batches += 1
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        chosen: list[tuple[Match, ...]] = [()] * len(prompts)
        field_probs: list[list[tuple[float, ...]]] = [[] for _ in prompts]
        off_schema: list[str | None] = [None] * len(prompts)
        for field_name in explain.FIELD_ORDER:
            slots = [self._schema.fields[c] for c in chosen]
            option_logits, on_schema = self._slot_options(cache, mask, lengths, slots)
            for i in range(len(prompts)):
                probs = np.round(torch.softmax(option_logits[i], -1).numpy(), PROB_DECIMALS)
                field_probs[i].append(tuple(float(p) for p in probs))
                chosen[i] = (*chosen[i], explain.MATCH_VALUES[int(option_logits[i].argmax())])
                if off_schema[i] is None and not on_schema[i]:
                    off_schema[i] = f"{field_name}: the most likely token is no allowed value"
        slots = [self._schema.grade[c] for c in chosen]
        option_logits, on_schema = self._slot_options(cache, mask, lengths, slots)
        labels = []
        for i in range(len(prompts)):
            if off_schema[i] is None and not on_schema[i]:
                off_schema[i] = "grade: the most likely token is no grade"
            category, brand, attribute = chosen[i]
            rationale = Rationale(
                category_match=category,
                brand_match=brand,
                attribute_match=attribute,
                text=explain.rationale_text(category, brand, attribute).strip(),
                probs=tuple(field_probs[i]),
            )
            labels.append(self._to_label(option_logits[i], rationale))
        return labels, off_schema

    def _slot_options(
        self,
        cache: Any,
        prompt_mask: torch.Tensor,
        prompt_lengths: torch.Tensor,
        slots: Sequence[explain.Slot],
    ) -> tuple[torch.Tensor, list[bool]]:
        """Each row's allowed-value logits [n, options] after its slot's answer prefix, run
        on the prompts' cache, and whether the full-vocabulary argmax is an allowed value.

        The prompts are right-padded, so a row's prefix follows its prompt's padding: the
        attention mask hides the padding and the positions continue from the prompt's
        length. The cache is cut back to the prompts afterwards, for the next slot.
        """
        prefixes = [slot.prefix for slot in slots]
        prefix_ids, prefix_mask = _pad(prefixes, self.tokenizer.pad_token_id, left=False)
        steps = torch.arange(prefix_ids.shape[1], device=self.device)
        hidden = self.model.base_model(
            input_ids=prefix_ids.to(self.device),
            attention_mask=torch.cat([prompt_mask, prefix_mask.to(self.device)], 1),
            position_ids=prompt_lengths[:, None] + steps[None, :],
            use_cache=True,
            **{self._cache_kwarg: cache},
        ).last_hidden_state
        # A negative crop removes that many tokens in every transformers 4.5x-5.x.
        cache.crop(-prefix_ids.shape[1])
        self.stats.batches += 1
        # Every prefix holds at least its field's label ("Category:", "Grade:"...).
        last = torch.tensor([len(s.prefix) - 1 for s in slots], device=self.device)
        logits = self.model.get_output_embeddings()(hidden[torch.arange(len(slots)), last])
        options = torch.tensor([s.options for s in slots], device=self.device)
        on_schema = (logits.argmax(-1, keepdim=True) == options).any(-1)
        return logits.gather(1, options).double().cpu(), on_schema.tolist()
