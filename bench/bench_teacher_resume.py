"""Benchmark: is the demo's teacher undertrained? Continue one teacher seed for more epochs.

On a demo run directory whose teacher stage has run, copies one seed's checkpoint
(``teachers/seed-K``, with its resume state), continues it to ``--epochs`` (the linear
schedule is rebuilt for the new length, so this is a warm restart, not a fresh run of
that many epochs), and evaluates both teachers on the test queries with bootstrap 95%
intervals and the paired difference (``training.eval.intervals``).

    python bench/bench_teacher_resume.py --run-dir RUN [--seed 0] [--epochs 10] [--out FILE]

Writes ``bench/results/teacher_resume.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import yaml
from run_record import commit, machine

from training.eval.evaluate import evaluate_split
from training.eval.intervals import estimate, paired_difference
from training.teacher.config import TeacherTrainConfig
from training.teacher.labeler import TeacherLabeler
from training.teacher.train import train

RESULTS = Path(__file__).parent / "results" / "teacher_resume.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="`relkd demo --out` dir.")
    parser.add_argument("--seed", type=int, default=0, help="Teacher seed to continue.")
    parser.add_argument("--epochs", type=float, default=10.0, help="Total epochs after resuming.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    source = args.run_dir / "teachers" / f"seed-{args.seed}"
    target = args.run_dir / f"teacher-seed-{args.seed}-{args.epochs:g}-epochs"
    load_before, started = os.getloadavg()[0], time.monotonic()
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    trained = TeacherTrainConfig(**yaml.safe_load((source / "train_config.yaml").read_text()))
    summary = train(
        trained.model_copy(
            update={"output_dir": target, "epochs": args.epochs, "resume": True, "num_threads": 0}
        )
    )
    dataset = args.run_dir / "dataset"
    per_query = {
        name: evaluate_split(TeacherLabeler.from_checkpoint(path), dataset, "test").per_query[
            "ndcg@10"
        ]
        for name, path in (("trained", source), ("continued", target))
    }
    result = {
        "benchmark": "teacher_resume",
        "run_dir": str(args.run_dir),
        "commit": commit(),
        "seed": args.seed,
        "epochs_trained": trained.epochs,
        "epochs_continued_to": args.epochs,
        "dev_history": [{"step": h["step"], "ndcg@10": h["ndcg@10"]} for h in summary["history"]],
        "test_queries": len(per_query["trained"]),
        "test_ndcg@10": {name: estimate([v]).as_dict() for name, v in per_query.items()},
        "continued_minus_trained": paired_difference(
            [per_query["continued"]], [per_query["trained"]]
        ).as_dict(),
        "machine": machine(load_before),
        "wall_s": time.monotonic() - started,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("test_ndcg@10", "continued_minus_trained")}, indent=2))


if __name__ == "__main__":
    main()
