"""Benchmark: one `relkd demo` run, recorded with its timings and the machine's load.

The demo at ``--scale default`` is the distillation experiment the README and
docs/demo.md quote: hard simulator profile, scarce human labels (the teacher and every
student see the same 50 human-labeled train queries), many unlabeled queries labeled by
the teacher through Kafka, cross-encoders on 0 / 50 / 100 / 200 augmented queries and
two-towers on 0 / 200, each with three seeds and a budget in epochs, bootstrap 95%
intervals over test queries, paired comparisons at equal human data
(``ops.demo.pipeline.SCALES`` holds each scale's sizes). ``--stage`` re-runs stages on
an existing ``--out``; students that already finished with the same settings are kept.

    python bench/bench_demo.py [--scale default] [--out DIR] [--seed 0] [--plot docs/img/...]

Writes ``bench/results/demo_<scale>.json`` (results, comparisons, per-stage seconds and
load averages, commit) and copies the scaling plot to ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from run_record import commit, machine

from ops.demo.pipeline import STAGES, DemoRun, run_demo
from ops.demo.report import ModelResult, compare_students, comparison_table, results_table

RESULTS_DIR = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default")
    parser.add_argument("--out", type=Path, help="Run directory [default: a new temp dir].")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels-timeout", type=float, default=1800.0)
    parser.add_argument(
        "--stage", action="append", choices=STAGES, help="Only these stages (re-runs)."
    )
    parser.add_argument("--plot", type=Path, help="Copy the NDCG@10 scaling plot here.")
    args = parser.parse_args()
    out = args.out or Path(f".relkd/bench-demo-{args.scale}-{int(time.time())}")
    run = DemoRun(out, args.scale, args.seed, args.labels_timeout)
    load_before = os.getloadavg()
    started = time.monotonic()
    report = run_demo(run, tuple(args.stage) if args.stage else STAGES)
    wall = time.monotonic() - started
    stages = {}
    for name in STAGES:
        try:
            state = run.state(name)
        except FileNotFoundError:
            continue
        stages[name] = {
            "seconds": state.get("stage_seconds"),
            "load_avg_1m": state.get("load_avg_1m"),
        }
    result = {
        "benchmark": "demo",
        "scale": args.scale,
        "commit": commit(),
        # OMP_NUM_THREADS 1 on a CPU shared with other jobs: oversubscribed torch threads
        # slow each other.
        "machine": machine(load_before[0], OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS")),
        "wall_s_this_invocation": wall,
        "stages": stages,
        "config": run.config(),
        "data": {
            "summary": run.state("simulate")["summary"],
            "teacher_labels": run.state("candidates")["teacher_labels"],
            "augmented_queries": run.state("candidates")["augmented_queries"],
        },
        "students": {
            name: {
                k: info[k]
                for k in (
                    "group",
                    "seed",
                    "steps",
                    "best_step",
                    "best_dev_ndcg10",
                    "train_examples",
                )
            }
            for name, info in run.state("students")["students"].items()
        },
        "results": json.loads((report.parent / "results.json").read_text()),
        "comparisons": json.loads((report.parent / "comparisons.json").read_text()),
        "report": str(report),
    }
    path = RESULTS_DIR / f"demo_{args.scale}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        shutil.copyfile(report.parent / "ndcg_vs_augmented.png", args.plot)
    print(f"wrote {path}\n")
    # The tables the README and docs/demo.md quote, rendered from what was just written.
    results = [ModelResult(**r) for r in result["results"]]
    per_query = run.state("evaluate")["per_query"]
    print(comparison_table(compare_students(results, per_query)) + "\n")
    print(results_table(results))


if __name__ == "__main__":
    main()
