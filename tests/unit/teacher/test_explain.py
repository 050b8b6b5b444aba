"""Parsing of chain-of-thought generations, well-formed and malformed."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from contracts.schema import Match
from training.teacher.explain import (
    GradeTokens,
    parse_judgment,
    rationale_text,
    sft_sequence,
    step_by_step_prompt,
)

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
    prompt = step_by_step_prompt("Query: {query}\nProduct: {title}", "red sofa", product)
    seq = sft_sequence(tokenizer, tokens, prompt, WELL_FORMED[:-8] + "\n", 2, 256)
    # The grade slot follows "Grade:" and holds the given grade's token.
    slot = seq.grade_position + 1
    assert seq.input_ids[slot] == tokens.grades[2]
    assert seq.lm_labels[slot] == -100
    assert tokens.find_grade_step(seq.input_ids) == slot
    # Only the answer (and eos) are LM targets, never the prompt.
    first_target = next(i for i, label in enumerate(seq.lm_labels) if label != -100)
    assert tokenizer.decode(seq.input_ids[first_target:slot]).strip().startswith("Category")
    assert tokens.find_grade_step(seq.input_ids[:slot]) is None
