"""A tiny generative teacher learns to write its judgment (issue 18): trained on CPU in
seconds, its free greedy decoding is parseable on >= 95% of held-out pairs, and the
closed-set labeler's off-schema count finds the same malformed share as parsing does.

(A lenient parser once read "Grade: not stated\nGrade: 2" as grade 2 and reported
72/72 parseable where the labeler counted 30 off-schema; the first grade counts now.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.teacher.config import TeacherTrainConfig
from training.teacher.data import load_split
from training.teacher.explain import parse_judgment, prompt_ids
from training.teacher.labeler import TeacherLabeler
from training.teacher.train import train

# Enough steps for a 2-layer, 32-wide Llama to learn the answer's format (not the task):
# 64 pairs (128 sequences) x 15 epochs = 240 steps; 120 steps left a third of the held-out
# pairs writing a field value where the grade belongs.
CONVERGED = {
    "kind": "generative",
    "template": "title",
    "epochs": 15.0,
    "batch_size": 8,
    "max_length": 48,
    "lr": 1e-2,
    "patience": 0,
    "max_train_examples": 64,
    "max_dev_examples": 12,
    # Longer than the run: one dev evaluation, at the last step, so the saved teacher is
    # the trained one. Per-epoch evaluations let the best dev NDCG@10 of 12 pairs (noise
    # at this scale, and a score of the direct prompt only) restore an early checkpoint
    # that has not learned the step-by-step format (step 136 of 320 in a 40-epoch run:
    # 48/72 parseable).
    "eval_every": 10_000,
}


@pytest.fixture(scope="module")
def generative_teacher(tmp_path_factory, tiny_dataset: Path, llama_backbone: Path) -> Path:
    out = tmp_path_factory.mktemp("generative") / "teacher"
    train(
        TeacherTrainConfig(
            backbone=str(llama_backbone), dataset_dir=tiny_dataset, output_dir=out, **CONVERGED
        )
    )
    return out


@pytest.fixture(scope="module")
def held_out(tiny_dataset: Path) -> list[tuple[str, dict]]:
    return [(p.query, p.product) for p in load_split(tiny_dataset, "test")]


def test_greedy_decoding_writes_a_parseable_judgment(generative_teacher, held_out) -> None:
    labeler = TeacherLabeler.from_checkpoint(generative_teacher, device="cpu")
    tokenizer = labeler.tokenizer
    parsed = []
    for query, product in held_out:
        prompt = prompt_ids(tokenizer, labeler.template, query, product, True, labeler.max_length)
        with torch.no_grad():
            out = labeler.model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
                max_new_tokens=40,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        parsed.append(
            parse_judgment(tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True))
        )
    malformed = [p.error for p in parsed if p.error is not None]
    assert len(malformed) <= 0.05 * len(held_out), malformed[:5]

    # The labeler's off-schema count is the service's malformed metric; it is counted
    # for every explained pair and measures what parsing free decoding measures (the
    # closed set checks each slot's first token, parsing the whole text, so a few
    # pairs may differ).
    labeler.label(held_out, explain=True)
    assert labeler.stats.explained == len(held_out)
    assert abs(labeler.stats.malformed_generations - len(malformed)) <= 0.05 * len(held_out)
