"""The explainable (chain-of-thought) teacher: prompts, SFT targets and parsing.

Following Taobao's ELLM-rele, a generative teacher first judges the category, brand and
attribute/model match of a pair, then gives its grade::

    Category: match
    Brand: not stated
    Attributes: mismatch
    Grade: 2

The grade distribution is read from the probabilities of the four grade tokens at the
position after ``Grade:``, not from the sampled digit. The same model also learns a
*direct* prompt that asks for the grade only; that single forward pass is the
teacher's classifier path, used for plain labeling and as the fallback whenever a
generation cannot be parsed.
"""

from __future__ import annotations

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
    "Judgment:\n"
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
_GRADE_LINE = re.compile(r"grade\s*[:=]\s*\**\s*(?P<grade>\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Rationale:
    """The teacher's step-by-step judgment of one pair."""

    category_match: Match
    brand_match: Match
    attribute_match: Match
    text: str


@dataclass(frozen=True)
class ParsedJudgment:
    """A parsed generation: ``rationale`` and ``grade`` are None when it is malformed."""

    rationale: Rationale | None
    grade: int | None
    error: str | None


def step_by_step_prompt(template: str, query: str, product: Mapping[str, Any]) -> str:
    return _INTRO + render(template, query, product) + _STEP_BY_STEP


def direct_prompt(template: str, query: str, product: Mapping[str, Any]) -> str:
    return _INTRO + render(template, query, product) + _DIRECT


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
    the grade is missing or outside 0..3; the first occurrence of each field counts.
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
    grade = int(grade_match["grade"])
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

    def find_grade_step(self, generated: Sequence[int]) -> int | None:
        """Index in ``generated`` of the first grade token right after the prefix."""
        width = len(self.prefix)
        for start in range(len(generated) - width):
            if tuple(generated[start : start + width]) == self.prefix:
                step = start + width
                return step if generated[step] in self.grades else None
        return None


@dataclass(frozen=True)
class SftSequence:
    """One supervised sequence: token ids, which of them are LM targets, and the grade slot.

    ``lm_labels[i]`` is the token expected *at* position i (-100: not a target), so the
    logits at i-1 are trained to predict it.
    ``grade_position`` is the index whose *next-token* logits must spell the grade; its
    loss is the soft cross-entropy against the raters' distribution, not a hard token.
    """

    input_ids: list[int]
    lm_labels: list[int]
    grade_position: int


def sft_sequence(
    tokenizer: PreTrainedTokenizerBase,
    tokens: GradeTokens,
    prompt: str,
    reasoning: str,
    grade: int,
    max_length: int,
) -> SftSequence:
    """prompt + reasoning + ``Grade:`` + <grade slot> + eos, truncating the prompt to fit."""
    body = tokenizer(reasoning, add_special_tokens=False)["input_ids"] if reasoning else []
    answer = [*body, *tokens.prefix]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    budget = max_length - len(answer) - 1 - len(eos)
    if budget < 8:
        raise ValueError(f"max_length: {max_length} leaves no room for the prompt")
    prompt_ids = tokenizer(prompt, truncation=True, max_length=budget)["input_ids"]
    # The grade slot's input is the majority grade; its LM label is ignored (-100)
    # because the soft grade loss over all four grade tokens replaces it.
    input_ids = [*prompt_ids, *answer, tokens.grades[grade], *eos]
    ignore = [-100] * len(prompt_ids)
    lm_labels = [*ignore, *answer, -100, *eos]
    return SftSequence(input_ids, lm_labels, grade_position=len(prompt_ids) + len(answer) - 1)
