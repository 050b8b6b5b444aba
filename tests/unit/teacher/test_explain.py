"""Parsing of chain-of-thought generations, well-formed and malformed."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from contracts.schema import Match
from training.teacher import explain
from training.teacher.explain import (
    MATCH_VALUES,
    GradeTokens,
    JudgmentSchema,
    parse_judgment,
    prompt_ids,
    rationale_text,
    sft_sequence,
)
from training.teacher.templates import TEMPLATES

TITLE = TEMPLATES["title"]
WELL_FORMED = "Category: match\nBrand: not stated\nAttributes: mismatch\nGrade: 2"


def test_well_formed_generation_parses_into_fields_grade_and_text() -> None:
    parsed = parse_judgment(WELL_FORMED)
    assert parsed.error is None
    assert parsed.grade == 2
    assert parsed.rationale is not None
    assert parsed.rationale.category_match is Match.MATCH
    assert parsed.rationale.brand_match is Match.NOT_STATED
    assert parsed.rationale.attribute_match is Match.MISMATCH
    assert parsed.rationale.text == "Category: match\nBrand: not stated\nAttributes: mismatch"


@pytest.mark.parametrize(
    ("text", "expected", "grade"),
    [
        # Markup, case, synonyms, reordered fields and surrounding prose.
        (
            "Let me check.\n**Brand**: Does not match\n- category match: Yes, both sofas\n"
            "Attribute/model: unknown\nFinal grade = 1.",
            (Match.MATCH, Match.MISMATCH, Match.NOT_STATED),
            1,
        ),
        (
            "CATEGORY: MATCHES\nBRAND - same brand\nModel: different size\nGRADE: **3**",
            (Match.MATCH, Match.MATCH, Match.MISMATCH),
            3,
        ),
        (
            "Category: mismatch (lamp vs sofa)\nBrand: n/a\nAttributes: not mentioned\nGrade: 0",
            (Match.MISMATCH, Match.NOT_STATED, Match.NOT_STATED),
            0,
        ),
    ],
)
def test_tolerant_parsing(text: str, expected: tuple[Match, Match, Match], grade: int) -> None:
    parsed = parse_judgment(text)
    assert parsed.error is None, parsed.error
    assert parsed.rationale is not None
    got = (
        parsed.rationale.category_match,
        parsed.rationale.brand_match,
        parsed.rationale.attribute_match,
    )
    assert got == expected
    assert parsed.grade == grade


def test_rationale_text_round_trips_through_the_parser() -> None:
    for values in [(Match.MATCH, Match.MISMATCH, Match.NOT_STATED), tuple(Match)]:
        parsed = parse_judgment(rationale_text(*values) + "Grade: 1")
        assert parsed.rationale is not None
        assert (
            parsed.rationale.category_match,
            parsed.rationale.brand_match,
            parsed.rationale.attribute_match,
        ) == values


@pytest.mark.parametrize(
    ("text", "error_part"),
    [
        ("", "missing field"),
        ("Category: match\nBrand: match\nGrade: 3", "attribute_match"),
        ("Category: match\nBrand: match\nAttributes: match", "missing grade"),
        ("Category: match\nBrand: match\nAttributes: match\nGrade: 7", "outside"),
        # The first grade counts: a later one must not rescue a value in its place.
        (
            "Category: match\nBrand: match\nAttributes: not stated\nGrade: not stated\nGrade: 2",
            "not a number",
        ),
        ("Category: banana\nBrand: match\nAttributes: match\nGrade: 3", "unrecognised"),
        ("Grade: Grade: Grade: \x00\x01 ###", "missing field"),
    ],
)
def test_malformed_generations_report_an_error_instead_of_raising(
    text: str, error_part: str
) -> None:
    parsed = parse_judgment(text)
    assert parsed.rationale is None
    assert parsed.grade is None
    assert parsed.error is not None and error_part in parsed.error


def test_grade_tokens_and_sft_sequence_line_up(llama_backbone) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama_backbone)
    tokens = GradeTokens.from_tokenizer(tokenizer)
    assert len(set(tokens.grades)) == 4
    product = {"title": "acme red sofa", "product_type": "sofa", "brand": "acme"}
    prompt = prompt_ids(tokenizer, TITLE, "red sofa", product, True, 256)
    seq = sft_sequence(tokenizer, tokens, prompt, WELL_FORMED[:-8] + "\n", 2)
    # The grade slot follows "Grade:", holds the given grade's token and is an LM target
    # (free decoding must learn to write a grade, not only to rank grade tokens).
    slot = seq.grade_position + 1
    assert seq.input_ids[slot - len(tokens.prefix) : slot] == list(tokens.prefix)
    assert seq.input_ids[slot] == tokens.grades[2]
    assert seq.lm_labels[slot] == tokens.grades[2]
    # Only the answer (and eos) are LM targets, never the prompt.
    first_target = next(i for i, label in enumerate(seq.lm_labels) if label != -100)
    assert first_target == len(prompt)
    assert tokenizer.decode(seq.input_ids[first_target:slot]).strip().startswith("Category")


def test_a_long_product_text_is_cut_never_the_instructions_or_the_answer(llama_backbone) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama_backbone)
    tokens = GradeTokens.from_tokenizer(tokenizer)
    product = {"title": "acme red sofa " * 200, "product_type": "sofa"}
    short = {"title": "acme red sofa", "product_type": "sofa"}
    for step_by_step in (True, False):
        cut = prompt_ids(tokenizer, TITLE, "red sofa", product, step_by_step, 40)
        whole = prompt_ids(tokenizer, TITLE, "red sofa", short, step_by_step, 40)
        suffix = tokenizer.decode(whole[-12:])
        assert tokenizer.decode(cut[-12:]) == suffix and suffix.endswith(":\n")
        # The pair text took exactly its 40 tokens (the query at its start is kept),
        # the instructions came whole after it.
        instructions = explain._STEP_BY_STEP if step_by_step else explain._DIRECT
        n_instructions = len(tokenizer(instructions, add_special_tokens=False)["input_ids"])
        n_intro = len(tokenizer(explain._INTRO)["input_ids"])
        assert len(cut) == n_intro + 40 + n_instructions
        assert "Query: red sofa" in tokenizer.decode(cut[n_intro : n_intro + 20])
        seq = sft_sequence(tokenizer, tokens, cut, WELL_FORMED[:-8] + "\n", 1)
        assert seq.input_ids[seq.grade_position + 1] == tokens.grades[1]


def test_judgment_schema_prefixes_are_the_trained_answers_tokens(llama_backbone) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama_backbone)
    tokens = GradeTokens.from_tokenizer(tokenizer)
    schema = JudgmentSchema.from_tokenizer(tokenizer, tokens)
    assert len(schema.fields) == 1 + 3 + 9 and len(schema.grade) == 27
    for combo, grade_slot in schema.grade.items():
        answer = tokenizer(rationale_text(*combo), add_special_tokens=False)["input_ids"]
        assert list(grade_slot.prefix) == [*answer, *tokens.prefix]
        for depth, value in enumerate(combo):
            slot = schema.fields[combo[:depth]]
            # The slot's prefix then the chosen value's first token start the answer.
            start = len(slot.prefix)
            assert answer[:start] == list(slot.prefix)
            assert answer[start] == slot.options[MATCH_VALUES.index(value)]
