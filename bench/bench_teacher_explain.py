"""Explainable teacher labeling: closed-set log-prob scoring vs greedy ``generate``.

    python bench/bench_teacher_explain.py [--checkpoint DIR --dataset DIR] [--pairs 72]
                                          [--repeats 3] [--out bench/results/teacher_explain.json]

Both paths label the same pairs with the same generative teacher on CPU:

* ``closed_set`` - ``TeacherLabeler.label(pairs, explain=True)``: one batched forward
  pass per slot of the judgment (category, brand, attributes, grade), scoring only the
  values the schema allows (``training/teacher/labeler.py``);
* ``greedy`` - the former path: token-budget batches, left-padded, greedy ``generate``
  of up to ``--max-new-tokens`` tokens, then ``explain.parse_judgment``.

The paths are interleaved (each of ``--repeats`` rounds runs both, in alternating
order); each figure is the median of the rounds with min/max, and the load average is
recorded before and after. Also reported: how many greedy generations parse, how many
pairs the closed-set labeler counts off-schema (both measure the same thing: whether
free decoding leaves the judgment's format), and how often the two paths agree on the
fields and the grade.

Without ``--checkpoint`` a tiny Llama-shaped generative teacher (2 layers, 32 wide, the
unit tests' BPE tokenizer and dataset) is trained in a temporary directory (~1 min on
2 cores): the tiny scale measures the paths' overhead ratio, not a real teacher's speed
(``../shared/GPU-FINDINGS.md`` has the H200 figure of the greedy path: 36.6 pairs/s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.teacher import explain
from training.teacher.config import TeacherTrainConfig
from training.teacher.data import load_split
from training.teacher.labeler import TeacherLabeler, _pad, token_budget_batches
from training.teacher.train import train

Pair = tuple[str, Mapping[str, Any]]
# The unit tests' tiny generative teacher (tests/unit/teacher/test_generative_judgment.py).
TINY_TEACHER = {
    "kind": "generative",
    "template": "title",
    "epochs": 15.0,
    "batch_size": 8,
    "max_length": 48,
    "lr": 1e-2,
    "patience": 0,
    "max_train_examples": 64,
    "max_dev_examples": 12,
    "eval_every": 10_000,
}


def tiny_teacher(work: Path) -> tuple[Path, Path]:
    """(checkpoint, dataset) of a tiny generative teacher trained here."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from model_fixtures import _bpe_tokenizer, _seeded, write_tiny_dataset
    from transformers import AutoModelForCausalLM, LlamaConfig

    dataset = write_tiny_dataset(work / "data")
    backbone = work / "llama"
    tokenizer = _bpe_tokenizer(with_unk=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    _seeded(lambda: AutoModelForCausalLM.from_config(config)).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    checkpoint = work / "teacher"
    train(
        TeacherTrainConfig(
            backbone=str(backbone), dataset_dir=dataset, output_dir=checkpoint, **TINY_TEACHER
        )
    )
    return checkpoint, dataset


@torch.no_grad()
def greedy_judgments(
    labeler: TeacherLabeler, pairs: Sequence[Pair], max_new_tokens: int
) -> list[explain.ParsedJudgment]:
    """The former explainable path: batched greedy generation, then parsing."""
    tokenizer = labeler.tokenizer
    prompts = [labeler._prompt(query, product, step_by_step=True) for query, product in pairs]
    parsed: list[explain.ParsedJudgment | None] = [None] * len(pairs)
    lengths = [len(p) + max_new_tokens for p in prompts]
    for batch in token_budget_batches(lengths, labeler.max_tokens):
        # Generation pads on the left; generate() derives positions from the mask.
        ids, mask = _pad([prompts[i] for i in batch], tokenizer.pad_token_id, left=True)
        out = labeler.model.generate(
            input_ids=ids.to(labeler.device),
            attention_mask=mask.to(labeler.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row, index in enumerate(batch):
            text = tokenizer.decode(out[row, ids.shape[1] :], skip_special_tokens=True)
            parsed[index] = explain.parse_judgment(text)
    return [p for p in parsed if p is not None]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(float(np.median(values)), 2),
        "min_max": [round(min(values), 2), round(max(values), 2)],
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    if args.checkpoint is None:
        checkpoint, dataset = tiny_teacher(work)
    else:
        checkpoint, dataset = args.checkpoint, args.dataset
    pairs: list[Pair] = [(p.query, p.product) for p in load_split(dataset, args.split)]
    pairs = pairs[: args.pairs]
    labeler = TeacherLabeler.from_checkpoint(checkpoint, device="cpu")
    if labeler.kind != "generative":
        raise SystemExit(f"{checkpoint}: the explainable path needs a generative teacher")
    # Warm-up: first-call allocations and lazy init.
    labeler.label(pairs[:4], explain=True)
    greedy_judgments(labeler, pairs[:4], args.max_new_tokens)

    rates: dict[str, list[float]] = {"closed_set": [], "greedy": []}
    closed: list[Any] = []
    greedy: list[explain.ParsedJudgment] = []
    off_schema = 0
    for repeat in range(args.repeats):
        order = ["closed_set", "greedy"] if repeat % 2 == 0 else ["greedy", "closed_set"]
        for path in order:
            if path == "closed_set":
                before = labeler.stats.malformed_generations
                seconds, closed = timed(lambda: labeler.label(pairs, explain=True))
                off_schema = labeler.stats.malformed_generations - before
            else:
                seconds, greedy = timed(
                    lambda: greedy_judgments(labeler, pairs, args.max_new_tokens)
                )
            rates[path].append(len(pairs) / seconds)
    load_after = os.getloadavg()

    well_formed = [g for g in greedy if g.error is None]
    agree = sum(
        g.error is None
        and g.rationale is not None
        and label.rationale is not None
        and (g.rationale.category_match, g.rationale.brand_match, g.rationale.attribute_match)
        == (
            label.rationale.category_match,
            label.rationale.brand_match,
            label.rationale.attribute_match,
        )
        and g.grade == int(np.argmax(label.grade_probs))
        for g, label in zip(greedy, closed, strict=True)
    )
    pairs_per_s = {path: summary(values) for path, values in rates.items()}
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "repeats": args.repeats,
            "gpu": None,
            "shared": "2 cores shared with other engineers' work; compare the ratio",
        },
        "teacher": {
            "checkpoint": str(args.checkpoint) if args.checkpoint else "tiny Llama (trained here)",
            "name": f"{labeler.name}@{labeler.version}",
            "max_length": labeler.max_length,
            "max_tokens": labeler.max_tokens,
        },
        "pairs": len(pairs),
        "max_new_tokens": args.max_new_tokens,
        "pairs_per_s": pairs_per_s,
        "closed_set_vs_greedy": round(
            pairs_per_s["closed_set"]["median"] / pairs_per_s["greedy"]["median"], 2
        ),
        "format": {
            "greedy_well_formed": len(well_formed),
            "greedy_errors": sorted({g.error for g in greedy if g.error})[:5],
            "closed_set_off_schema": off_schema,
            "paths_agree_on_fields_and_grade": agree,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="Generative teacher checkpoint.")
    parser.add_argument("--dataset", type=Path, help="Dataset of --checkpoint's pairs.")
    parser.add_argument("--split", default="test", help="Split whose pairs are labeled.")
    parser.add_argument("--pairs", type=int, default=72, help="Pairs per path and round.")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="Greedy path's limit.")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved rounds (>= 3).")
    parser.add_argument("--out", type=Path, default=Path("bench/results/teacher_explain.json"))
    args = parser.parse_args()
    if (args.checkpoint is None) != (args.dataset is None):
        parser.error("--checkpoint and --dataset go together")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as work:
        report = run(args, Path(work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
