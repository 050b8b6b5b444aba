"""Benchmark: at equal scarce human data, does distillation beat the human-only student?

The default demo's headline comparison for one student kind, cheap enough to run when
the whole demo is not: on a demo run directory whose `candidates` stage has run, trains
the demo's student (``ops.demo.pipeline.student_config``: budget in epochs, dev-only
checkpoint selection) per seed on the human-labeled train queries alone and on those
plus the teacher labels of ``--augmented`` unlabeled queries; evaluates both and the
run's teacher on the test queries, seeds averaged per query, with bootstrap 95%
intervals over the test queries and the paired interval of each difference
(``training.eval.intervals``). A student that finished with the same settings is evaluated,
not retrained (``training.student.train.finished_run``).

    python bench/bench_distill_gain.py --run-dir RUN [--seeds 3] [--augmented 200]
        [--kind cross-encoder|two-tower] [--workers 2] [--per-query K] [--out FILE]

``--per-query K`` asks for an augmented set the demo scale does not make: it runs the
demo's candidates stage on RUN (simulate and teacher stages done, candidates not yet)
with ``--augmented`` queries of K candidates each, through the same services.

Writes ``bench/results/distill_gain.json`` (the two-tower's: ``--out
bench/results/distill_gain_two_tower.json``; on 500 queries x 12 candidates:
``distill_gain_two_tower_500x12.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

from run_record import commit, machine

from ops.demo.pipeline import (
    SCALES,
    DemoRun,
    StudentRun,
    run_demo,
    train_students,
)
from training.eval.evaluate import evaluate_split
from training.eval.intervals import estimate, paired_difference
from training.student.checkpoint import load_student
from training.teacher.labeler import TeacherLabeler

RESULTS = Path(__file__).parent / "results" / "distill_gain.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="`relkd demo --out` dir.")
    parser.add_argument("--scale", default="default", help="The demo scale the run used.")
    parser.add_argument("--seeds", type=int, default=3, help="Training seeds 0..N-1.")
    parser.add_argument("--augmented", type=int, default=200, help="Teacher-labeled queries.")
    parser.add_argument("--kind", default="cross-encoder", choices=["cross-encoder", "two-tower"])
    parser.add_argument(
        "--per-query",
        type=int,
        help="Run the candidates stage first: --augmented queries, this many candidates each.",
    )
    parser.add_argument("--workers", type=int, default=1, help="Students trained side by side.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    scale = args.scale
    if args.per_query is not None:
        # A scale of its own, so the stage's state records the sizes it ran with.
        scale = f"{args.scale}-aug{args.augmented}x{args.per_query}"
        SCALES[scale] = replace(
            SCALES[args.scale], augmented_sizes=(args.augmented,), per_query=args.per_query
        )
    run = DemoRun(args.run_dir, scale)
    load_before, started = os.getloadavg()[0], time.monotonic()
    if args.per_query is not None:
        run_demo(run, ("candidates",))
    dataset = run.path("dataset")
    students = [
        StudentRun(f"{args.kind}-aug{n}-seed{seed}", f"{args.kind}-aug{n}", args.kind, n, seed)
        for n in (0, args.augmented)
        for seed in range(args.seeds)
    ]
    students_dir = run.path("students-distill-gain")
    results = train_students(run, students, students_dir, args.workers)
    per_query: dict[str, list[list[float]]] = {}
    trained: dict[str, list[dict]] = {}
    for student, result in zip(students, results, strict=True):
        trained.setdefault(student.group, []).append(
            {
                "seed": student.seed,
                "steps": result.steps,
                "best_dev_ndcg@10": result.best_dev_ndcg10,
            }
        )
        print(f"evaluating {student.name}", flush=True)
        evaluation = evaluate_split(load_student(students_dir / student.name), dataset, "test")
        per_query.setdefault(student.group, []).append(evaluation.per_query["ndcg@10"])
    print("evaluating the teacher", flush=True)
    teacher = evaluate_split(TeacherLabeler.from_checkpoint(run.path("teacher")), dataset, "test")
    per_query["teacher"] = [teacher.per_query["ndcg@10"]]
    human, distilled = f"{args.kind}-aug0", f"{args.kind}-aug{args.augmented}"
    result = {
        "benchmark": "distill_gain",
        "run_dir": str(args.run_dir),
        "scale": args.scale,
        "commit": commit(),
        "kind": args.kind,
        "seeds": args.seeds,
        "augmented_queries": args.augmented,
        "per_query": run.scale.per_query,
        "teacher_labels": run.state("candidates")["teacher_labels"],
        "workers": args.workers,
        "student_epochs": run.scale.student_epochs,
        "test_queries": len(per_query["teacher"][0]),
        "trained": trained,
        "ndcg@10": {name: estimate(values).as_dict() for name, values in per_query.items()},
        "distilled_minus_human_only": paired_difference(
            per_query[distilled], per_query[human]
        ).as_dict(),
        "distilled_minus_teacher": paired_difference(
            per_query[distilled], per_query["teacher"]
        ).as_dict(),
        "human_only_minus_teacher": paired_difference(
            per_query[human], per_query["teacher"]
        ).as_dict(),
        "machine": machine(load_before),
        "wall_s": time.monotonic() - started,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ndcg@10", "distilled_minus_human_only")}, indent=2))


if __name__ == "__main__":
    main()
