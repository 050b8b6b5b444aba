"""The explainable (chain-of-thought) teacher: prompts, SFT targets and parsing.

Following Taobao's ELLM-rele, a generative teacher first judges the category, brand and
attribute/model match of a pair, then gives its grade::

    Category: match
    Brand: not stated
    Attributes: mismatch
    Grade: 2

Labeling never decodes free text: the judgment's schema is closed (three values per
field, four grades), so :class:`JudgmentSchema` lists, for every choice made so far, the
token ids the answer has up to the next slot and the first token of each allowed value.
The labeler scores each slot's options by log-probability in one batched forward pass
(four passes in all: category, brand, attributes, grade), so each field comes with a
distribution, not only a value. The grade distribution is read from the four grade tokens
after ``Grade:``. The same model also learns a *direct* prompt that asks for the grade
only; that single forward pass is the teacher's classifier path.

Training supervises the grade slot twice: the hard majority-grade token in the LM loss
(so free decoding writes a grade at all) and the soft cross-entropy against the raters'
distribution over the four grade tokens (see ``train.py``).

Lengths: the (query, product) text is cut to the teacher's ``max_length`` tokens first
(the product text is at its end); instructions and the answer are appended whole, so a
prompt + target is never truncated and its length is derived, not configured.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from contracts.schema import NUM_GRADES, Match
from training.teacher.templates import render

_INTRO = "Judge how relevant the product is to the search query.\n"
_GRADES = "3 = exact, 2 = substitute, 1 = complement, 0 = irrelevant"
_STEP_BY_STEP = (
    "\nCheck step by step whether the product matches the query's category, brand and "
    f"attributes (match / mismatch / not stated), then give the grade ({_GRADES}).\n"
    # A last line of its own: the answer's format must not hinge on words far back.
    "Reasoning:\n"
)
_DIRECT = f"\nGive the grade only ({_GRADES}).\nJudgment:\n"
GRADE_PREFIX = "Grade:"

# Field label in the generated text -> rationale field.
_FIELD_LABELS = {"category": "category_match", "brand": "brand_match"}
_VALUE_TEXT = {Match.MATCH: "match", Match.MISMATCH: "mismatch", Match.NOT_STATED: "not stated"}

# Checked in order: "not stated" and "mismatch" phrases contain "match"-like words.
_NOT_STATED = re.compile(
    r"\b(not\s+(stated|mentioned|specified|given)|unspecified|unknown|n/?a|none|unclear)\b",
)
_MISMATCH = re.compile(
    r"\bmis-?match|does\s*n[o']t\s+match|\bnot\s+(a\s+)?match|\bno\s+match|\bdifferent|"
    r"\bconflict|^no\b",
)
_MATCH = re.compile(r"^(yes\b|same\b|consistent\b|match(es|ed|ing)?\b)")
_FIELD_LINE = re.compile(
    r"^[\s*\-#>]*(?P<label>category|brand|attributes?(?:\s*/\s*model)?|model)"
    r"(?:\s+match)?[\s*_]*[:=\-]\s*(?P<value>[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)
# The first "grade:" counts and must carry the number: a later one would accept a
# generation that wrote something else where the grade belongs ("Grade: not stated\n
# Grade: 2"), a judgment the closed-set labeler counts as off-schema.
_GRADE_LINE = re.compile(r"grade\s*[:=][ \t]*(?P<value>[^\n]*)", re.IGNORECASE)
_GRADE_VALUE = re.compile(r"\**\s*(?P<grade>\d+)\b")


@dataclass(frozen=True)
class Rationale:
    """The teacher's step-by-step judgment of one pair."""

    category_match: Match
    brand_match: Match
    attribute_match: Match
    text: str
    # p(value) of each field in FIELD_ORDER, values in MATCH_VALUES order; None when
    # the rationale was parsed from free text rather than scored.
    probs: tuple[tuple[float, ...], ...] | None = None


@dataclass(frozen=True)
class ParsedJudgment:
    """A parsed generation: ``rationale`` and ``grade`` are None when it is malformed."""

    rationale: Rationale | None
    grade: int | None
    error: str | None


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    query: str,
    product: Mapping[str, Any],
    step_by_step: bool,
    max_length: int,
) -> list[int]:
    """Prompt token ids: intro, the pair text cut to ``max_length`` tokens, then the
    instructions; only the pair text is ever cut, and the product text is at its end."""
    intro = tokenizer(_INTRO)["input_ids"]
    pair = tokenizer(
        render(template, query, product),
        add_special_tokens=False,
        truncation=True,
        max_length=max_length,
    )["input_ids"]
    head = [*intro, *pair]
    suffix = _STEP_BY_STEP if step_by_step else _DIRECT
    return [*head, *tokenizer(suffix, add_special_tokens=False)["input_ids"]]


def rationale_text(category: Match, brand: Match, attribute: Match) -> str:
    """The SFT target's reasoning lines, derived from the simulator's rule fields."""
    return (
        f"Category: {_VALUE_TEXT[category]}\n"
        f"Brand: {_VALUE_TEXT[brand]}\n"
        f"Attributes: {_VALUE_TEXT[attribute]}\n"
    )


def _match_value(text: str) -> Match | None:
    value = text.strip().strip("*_`.").strip().lower()
    if _NOT_STATED.search(value):
        return Match.NOT_STATED
    if _MISMATCH.search(value):
        return Match.MISMATCH
    if _MATCH.search(value):
        return Match.MATCH
    return None


def parse_judgment(text: str) -> ParsedJudgment:
    """Parse a generation, tolerating case, markup, synonyms, field order and extra prose.

    Malformed (``error`` set) when a field is missing or has an unrecognised value, or
    the grade is missing, not a number or outside 0..3; the first occurrence of each
    field and of the grade counts.
    """
    fields: dict[str, Match] = {}
    for found in _FIELD_LINE.finditer(text):
        label = found["label"].lower()
        field = _FIELD_LABELS.get(label, "attribute_match")
        if field in fields:
            continue
        value = _match_value(found["value"])
        if value is None:
            return ParsedJudgment(None, None, f"{field}: unrecognised value {found['value']!r}")
        fields[field] = value
    missing = [f for f in ("category_match", "brand_match", "attribute_match") if f not in fields]
    if missing:
        return ParsedJudgment(None, None, f"missing field(s) {missing}")
    grade_match = _GRADE_LINE.search(text)
    if grade_match is None:
        return ParsedJudgment(None, None, "missing grade")
    grade_value = _GRADE_VALUE.match(grade_match["value"])
    if grade_value is None:
        return ParsedJudgment(None, None, f"grade: not a number: {grade_match['value']!r}")
    grade = int(grade_value["grade"])
    if not 0 <= grade < NUM_GRADES:
        return ParsedJudgment(None, None, f"grade {grade} outside 0..{NUM_GRADES - 1}")
    reasoning = text[: grade_match.start()].strip()
    return ParsedJudgment(Rationale(text=reasoning, **fields), grade, None)


@dataclass(frozen=True)
class GradeTokens:
    """Token ids that spell ``Grade: <g>``: a shared prefix, then one token per grade."""

    prefix: tuple[int, ...]
    grades: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> GradeTokens:
        spelled = [
            tokenizer(f"{GRADE_PREFIX} {g}", add_special_tokens=False)["input_ids"]
            for g in range(NUM_GRADES)
        ]
        prefix = spelled[0][:-1]
        if any(len(ids) != len(prefix) + 1 or ids[:-1] != prefix for ids in spelled):
            raise ValueError(
                f"tokenizer {tokenizer.name_or_path}: '{GRADE_PREFIX} <g>' must end in one "
                f"token per grade after a shared prefix; got {spelled}"
            )
        grades = tuple(ids[-1] for ids in spelled)
        if len(set(grades)) != NUM_GRADES:
            raise ValueError(f"tokenizer {tokenizer.name_or_path}: grade tokens collide: {grades}")
        return cls(prefix=tuple(prefix), grades=grades)


@dataclass(frozen=True)
class SftSequence:
    """One supervised sequence: token ids, which of them are LM targets, and the grade slot.

    ``lm_labels[i]`` is the token expected *at* position i (-100: not a target), so the
    logits at i-1 are trained to predict it. The grade slot's label is the majority
    grade's token; ``grade_position`` is the index whose *next-token* logits spell the
    grade, where the soft loss against the raters' distribution applies as well.
    """

    input_ids: list[int]
    lm_labels: list[int]
    grade_position: int


def sft_sequence(
    tokenizer: PreTrainedTokenizerBase,
    tokens: GradeTokens,
    prompt: Sequence[int],
    reasoning: str,
    grade: int,
) -> SftSequence:
    """prompt ids (:func:`prompt_ids`) + reasoning + ``Grade:`` + grade token + eos."""
    body = tokenizer(reasoning, add_special_tokens=False)["input_ids"] if reasoning else []
    answer = [*body, *tokens.prefix]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    input_ids = [*prompt, *answer, tokens.grades[grade], *eos]
    lm_labels = [*([-100] * len(prompt)), *answer, tokens.grades[grade], *eos]
    return SftSequence(input_ids, lm_labels, grade_position=len(prompt) + len(answer) - 1)


FIELD_ORDER = ("category_match", "brand_match", "attribute_match")
# Value order of every field's distribution: the Match enum's.
MATCH_VALUES = tuple(Match)


@dataclass(frozen=True)
class Slot:
    """One decision of the closed-set decoder: the answer's ids before it, and the token
    that starts each allowed value (read at the last of ``prefix``)."""

    prefix: tuple[int, ...]
    options: tuple[int, ...]


@dataclass(frozen=True)
class JudgmentSchema:
    """Every slot of the step-by-step answer, keyed by the field values chosen before it.

    Built from the same text the teacher is trained on (:func:`rationale_text` then
    ``Grade:``), so the prefixes are exactly the SFT answer's tokens; construction fails
    with the tokenizer's name when two values of a field start with the same token (the
    first token could not tell them apart).
    """

    fields: dict[tuple[Match, ...], Slot]
    grade: dict[tuple[Match, ...], Slot]

    @classmethod
    def from_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase, grade_tokens: GradeTokens
    ) -> JudgmentSchema:
        def ids(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        fields: dict[tuple[Match, ...], Slot] = {}
        for depth in range(len(FIELD_ORDER)):
            for chosen in itertools.product(MATCH_VALUES, repeat=depth):
                start = _value_start(tokenizer, chosen, depth)
                filler = [Match.MATCH] * (len(FIELD_ORDER) - 1 - depth)
                answers = [ids(rationale_text(*chosen, v, *filler)) for v in MATCH_VALUES]
                prefix = answers[0][:start]
                if any(answer[:start] != prefix for answer in answers):
                    raise ValueError(
                        f"tokenizer {tokenizer.name_or_path}: the answer's tokens before "
                        f"{FIELD_ORDER[depth]} depend on its value"
                    )
                options = tuple(answer[start] for answer in answers)
                if len(set(options)) != len(options):
                    raise ValueError(
                        f"tokenizer {tokenizer.name_or_path}: values of {FIELD_ORDER[depth]} "
                        f"start with the same token: {options}"
                    )
                fields[chosen] = Slot(tuple(prefix), options)
        grade = {
            combo: Slot((*ids(rationale_text(*combo)), *grade_tokens.prefix), grade_tokens.grades)
            for combo in itertools.product(MATCH_VALUES, repeat=len(FIELD_ORDER))
        }
        return cls(fields, grade)


def _value_start(tokenizer: PreTrainedTokenizerBase, chosen: tuple[Match, ...], depth: int) -> int:
    """Token index where field ``depth``'s value starts, given the values before it."""
    labels = ("Category:", "Brand:", "Attributes:")
    text = "".join(f"{labels[i]} {_VALUE_TEXT[v]}\n" for i, v in enumerate(chosen))
    return len(tokenizer(text + labels[depth], add_special_tokens=False)["input_ids"])
