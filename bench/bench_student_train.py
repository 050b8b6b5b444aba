"""Benchmark: `relkd student train` against sentence-transformers' CrossEncoder.

Both train the same model (all-MiniLM-L6-v2, by default all six layers with trainable
word embeddings, as `relkd student train` defaults) with Margin-MSE on the same pair
batches (from :class:`QueryPairSampler`) for the same number of steps, learning rate
and schedule, in one process, once per seed (``--seeds``: initialisation, pair sampling
and dropout). Reports training throughput (pairs/s, training steps only) and the test
NDCG@10 each reaches, seed-averaged per test query, with bootstrap 95% intervals over the
test queries and the paired interval of the difference (``training.eval.intervals``).
sentence-transformers' student has one output logit, as its ``MarginMSELoss`` requires;
ours scores the expected grade plus a free score logit (docs/student.md).

    python bench/bench_student_train.py [--dataset-dir DIR] [--steps 60] [--seeds 3]

Writes ``bench/results/student_train.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import transformers
from rich.progress import track
from run_record import commit, machine
from sentence_transformers.cross_encoder import CrossEncoder
from sentence_transformers.cross_encoder.losses import MarginMSELoss
from transformers import get_linear_schedule_with_warmup

from contracts.text import product_text
from training.data.simulator import simulate
from training.eval.evaluate import evaluate_split
from training.eval.intervals import estimate, paired_difference
from training.student.checkpoint import load_student
from training.student.config import LossWeights, StudentTrainConfig
from training.student.examples import QueryPairSampler, load_training_set
from training.student.models.base import default_base_model
from training.student.train import train

RESULTS = Path(__file__).parent / "results" / "student_train.json"


class CrossEncoderScorer:
    """The Scorer protocol over a sentence-transformers CrossEncoder."""

    def __init__(self, model: CrossEncoder, text_fields: list[str]) -> None:
        self.model = model
        self.name = "sentence-transformers-cross-encoder"
        self.text_fields = text_fields

    def score_pairs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        texts = [product_text(p, self.text_fields) for p in products]
        return np.asarray(
            self.model.predict(list(zip(queries, texts, strict=True)), batch_size=256)
        )


def pair_batches(config: StudentTrainConfig) -> tuple[list, list[np.ndarray]]:
    """The training examples and the pair batches our trainer draws for ``config``."""
    examples = load_training_set(config).examples
    sampler = QueryPairSampler(
        examples,
        queries_per_batch=config.queries_per_batch,
        pairs_per_query=config.pairs_per_query,
        min_margin=config.min_margin,
        seed=config.seed,
    )
    return examples, [sampler.batch(n) for n in range(config.max_steps)]


def sentence_transformers_model(config: StudentTrainConfig) -> CrossEncoder:
    """sentence-transformers' CrossEncoder with one logit, on ``config``'s base model."""
    torch.manual_seed(config.seed)
    layers = {} if config.num_layers is None else {"num_hidden_layers": config.num_layers}
    model = CrossEncoder(
        config.base_model or default_base_model(),
        num_labels=1,
        max_length=config.max_length,
        config_kwargs=layers,
        device="cpu",
    )
    model.model.get_input_embeddings().requires_grad_(not config.freeze_embeddings)
    return model


def train_sentence_transformers(
    model: CrossEncoder, config: StudentTrainConfig, batches: list[np.ndarray], examples: list
) -> float:
    """Train ``model`` with sentence-transformers' MarginMSELoss on ``batches``, with our
    trainer's optimizer, schedule and clipping; return pairs/s. The test
    ``test_trainer_matches_sentence_transformers`` runs this loop against ours."""
    loss_fn = MarginMSELoss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * config.max_steps), config.max_steps
    )
    model.train()
    pairs_done, seconds = 0, 0.0
    for pairs in track(batches, description="sentence-transformers"):
        started = time.perf_counter()
        hi = [examples[i] for i in pairs[:, 0]]
        lo = [examples[j] for j in pairs[:, 1]]
        labels = torch.tensor([a.score - b.score for a, b in zip(hi, lo, strict=True)])
        loss = loss_fn(
            [[e.query for e in hi], [e.product_text for e in hi], [e.product_text for e in lo]],
            labels,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        seconds += time.perf_counter() - started
        pairs_done += len(pairs)
    model.eval()
    return pairs_done / seconds


def run_seed(
    dataset: Path, work: Path, seed: int, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Both trainers on the same batches of one seed: pairs/s and per-query test NDCG@10."""
    config = StudentTrainConfig(
        dataset_dir=dataset,
        output_dir=work / f"relkd-student-seed{seed}",
        use_teacher_labels=False,
        num_layers=args.num_layers,
        max_length=args.max_length,
        loss_weights=LossWeights(margin_mse=1.0, mse=0.0, kl=0.0, cot=0.0),
        max_steps=args.steps,
        eval_every=args.steps,
        lr=args.lr,
        torch_threads=args.threads,
        seed=seed,
    )
    examples, batches = pair_batches(config)
    st_model = sentence_transformers_model(config)
    st_pairs_per_s = train_sentence_transformers(st_model, config, batches, examples)
    st = evaluate_split(CrossEncoderScorer(st_model, config.text_fields), dataset)
    ours = train(config)
    our = evaluate_split(load_student(config.output_dir, device="cpu"), dataset)
    return {
        "relkd": {"pairs_per_s": ours.pairs_per_s, "per_query": our.per_query["ndcg@10"]},
        "sentence_transformers": {
            "pairs_per_s": st_pairs_per_s,
            "per_query": st.per_query["ndcg@10"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-dir", type=Path, help="Default: simulate a small dataset.")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3, help="Training seeds 0..N-1.")
    defaults = StudentTrainConfig.model_fields
    parser.add_argument("--num-layers", type=int, help="Default: all of MiniLM's six.")
    parser.add_argument("--max-length", type=int, default=defaults["max_length"].default)
    parser.add_argument("--lr", type=float, default=defaults["lr"].default)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads for both trainers."
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    load_before = os.getloadavg()
    started = time.monotonic()
    per_seed = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset_dir or simulate(
            Path(tmp) / "dataset", num_products=2000, num_queries=300, num_unlabeled=0
        )
        for seed in range(args.seeds):
            print(f"seed {seed + 1}/{args.seeds}", flush=True)
            per_seed.append(run_seed(dataset, Path(tmp), seed, args))

    trainers = ("relkd", "sentence_transformers")
    runs = {t: [s[t]["per_query"] for s in per_seed] for t in trainers}
    speed = {t: [s[t]["pairs_per_s"] for s in per_seed] for t in trainers}
    gap = paired_difference(runs["relkd"], runs["sentence_transformers"])
    result = {
        "benchmark": "student_train",
        "commit": commit(),
        "machine": machine(
            load_before[0], python=platform.python_version(), torch=torch.__version__
        ),
        "setup": {
            "steps": args.steps,
            "seeds": args.seeds,
            "pairs_per_batch": defaults["queries_per_batch"].default
            * defaults["pairs_per_query"].default,
            "losses": "Margin-MSE only (both)",
            "num_layers": args.num_layers or "all (6)",
            "max_length": args.max_length,
            "lr": args.lr,
            "torch_threads": args.threads,
            "dataset": str(args.dataset_dir or "simulated 2000 products / 300 queries"),
            "test_queries": len(runs["relkd"][0]),
            "interval": "bootstrap 95% over test queries of the seed-mean NDCG@10",
        },
        **{
            t: {
                "pairs_per_s": float(np.mean(speed[t])),
                "pairs_per_s_per_seed": speed[t],
                "test_ndcg@10": estimate(runs[t]).as_dict(),
            }
            for t in trainers
        },
        "relkd_minus_sentence_transformers": gap.as_dict(),
        "speedup": float(np.mean(speed["relkd"]) / np.mean(speed["sentence_transformers"])),
        "wall_s": time.monotonic() - started,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "setup"}, indent=2))


if __name__ == "__main__":
    main()
