"""Ablation: what chain-of-thought distillation adds to KL + Margin-MSE (issue 18).

One pipeline, run once, then a grid of students that differ only in the CoT weight:

1. data: the simulator's ``hard`` profile, then the scarce-human regime
   (``scarce_human_labels``: ``--keep-train`` train queries keep their judgments, the
   other train queries become unlabeled; dev and test unchanged);
2. teacher: a MiniLM classifier with rationale heads (the default), trained on the kept
   human judgments only;
3. augmentation: the teacher labels the candidate pools of the unlabeled queries (the
   simulator's judged pools of the queries whose judgments were dropped, i.e. the
   spectrum a candidate generator samples), through ``TeacherLabeler`` and
   ``TeacherLabel.rationale_columns`` as ``relkd teacher label`` does, so every teacher
   label carries the rationale distributions the label store keeps; counts checked;
4. students: for each kind (cross-encoder, two-tower) and seed, the same data and
   steps with loss weights Margin-MSE 1 + KL 0.5 and CoT 0 ("without") or ``--cot``
   ("with"); the best checkpoint by dev NDCG@10 (model selection on dev only);
5. test NDCG@10 per test query; for each arm the mean over seeds per query, and a
   bootstrap over test queries (``--bootstrap`` resamples, ``training.eval.intervals``)
   gives 95% intervals of the arm's mean and of the paired difference with - without.

    python bench/bench_cot_ablation.py [--work-dir DIR] [--seeds 0,1,2] [--steps 120]

Writes ``bench/results/cot_ablation.json`` (``--cot 1.0 --out
bench/results/cot_ablation_weight1.json`` gave the heavier-weight run). The defaults are
sized for the shared 2-core machine (2 student runs at a time, 1 torch thread each): 31
min at load average 15; docs/student.md gives the flags of a run large enough to show an
effect.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from contracts.schema import RATIONALE_FIELDS, RATIONALE_PROBS_FIELDS, Split
from training.data import storage
from training.data.simulator import simulate
from training.data.subsets import scarce_human_labels
from training.eval import intervals, metrics
from training.eval.scorer import Scorer, build_scorer
from training.student.checkpoint import load_student
from training.student.config import LossWeights, StudentKind, StudentTrainConfig
from training.student.train import train as train_student
from training.teacher.config import TeacherTrainConfig
from training.teacher.labeler import TeacherLabeler
from training.teacher.train import train as train_teacher

RESULTS = Path(__file__).parent / "results" / "cot_ablation.json"
KINDS = (StudentKind.CROSS_ENCODER, StudentKind.TWO_TOWER)


def test_pairs(dataset: Path, split: str = Split.TEST) -> tuple[list[str], list[str], list[int]]:
    judgments = storage.read_table(dataset, "judgments", ["query_id", "product_id", "grade"], split)
    return (
        judgments.column("query_id").to_pylist(),
        judgments.column("product_id").to_pylist(),
        judgments.column("grade").to_pylist(),
    )


def ndcg_per_query(scorer: Scorer, dataset: Path, split: str = Split.TEST) -> dict[str, float]:
    """NDCG@10 (graded gains) of each judged query of ``split``, its pool re-ranked by
    ``scorer`` (the metric and gains of ``relkd eval``)."""
    qids, pids, grades = test_pairs(dataset, split)
    queries = storage.read_table(dataset, "queries", ["query_id", "query"], split).to_pylist()
    text = {q["query_id"]: q["query"] for q in queries}
    products = storage.read_table(dataset, "products")
    products = products.filter(pc.is_in(products.column("product_id"), pc.unique(pids)))
    by_id = {p["product_id"]: p for p in products.to_pylist()}
    scores: list[float] = []
    for start in range(0, len(qids), 256):
        stop = start + 256
        scores.extend(
            scorer.score_pairs(
                [text[q] for q in qids[start:stop]], [by_id[p] for p in pids[start:stop]]
            ).tolist()
        )
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    run: dict[str, dict[str, float]] = defaultdict(dict)
    for q, p, g, s in zip(qids, pids, grades, scores, strict=True):
        qrels[q][p], run[q][p] = g, s
    return metrics.ndcg_per_query(qrels, run, 10, metrics.GRADED_GAINS)


def rationale_agreement(data: Path, full: Path) -> dict[str, Any]:
    """How often the teacher's most likely rationale value is the simulator's rule value,
    per field, over the labeled pool (whose judgments the scarce copy dropped)."""
    truth = {
        (r["query_id"], r["product_id"]): r
        for r in storage.read_table(full, "judgments").to_pylist()
    }
    labels = storage.read_table(data, "teacher_labels").to_pylist()
    out: dict[str, Any] = {"pairs": len(labels)}
    for field in RATIONALE_FIELDS:
        hits = [r[field] == truth[(r["query_id"], r["product_id"])][field] for r in labels]
        majority = max(
            np.bincount([truth[(r["query_id"], r["product_id"])][field] for r in labels])
        )
        out[field] = {
            "accuracy": float(np.mean(hits)),
            "majority_class": float(majority / len(labels)),
        }
    return out


def prepare(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Dataset, teacher and teacher labels; returns what the report says about them."""
    full, data = work / "full", work / "data"
    simulate(
        full,
        num_products=args.products,
        num_queries=args.queries,
        num_unlabeled=0,
        seed=0,
        profile="hard",
        show_progress=False,
    )
    scarce_human_labels(full, data, keep_train=args.keep_train, seed=0)
    started = time.monotonic()
    teacher_dir = work / "teacher"
    teacher_info = train_teacher(
        TeacherTrainConfig(
            dataset_dir=data,
            output_dir=teacher_dir,
            epochs=args.teacher_epochs,
            max_length=args.teacher_max_length,
            lr=args.teacher_lr,
            batch_size=32,
            max_train_examples=args.teacher_train_pairs,
            max_dev_examples=args.teacher_dev_pairs,
            num_threads=2,
            patience=0,
        )
    )
    teacher_s = time.monotonic() - started

    # The pools of the queries that lost their judgments, as candidates to label.
    unlabeled = storage.read_table(
        data, "queries", ["query_id", "query"], Split.UNLABELED
    ).to_pylist()
    chosen = sorted(q["query_id"] for q in unlabeled)[: args.augmented_queries]
    text = {q["query_id"]: q["query"] for q in unlabeled}
    pool = storage.read_table(full, "judgments", ["query_id", "product_id"])
    pool = pool.filter(pc.is_in(pool.column("query_id"), pa.array(chosen, pa.string()))).to_pylist()
    products = {p["product_id"]: p for p in storage.read_table(full, "products").to_pylist()}
    started = time.monotonic()
    labeler = TeacherLabeler.from_checkpoint(teacher_dir, device="cpu")
    labels = labeler.label([(text[r["query_id"]], products[r["product_id"]]) for r in pool])
    label_s = time.monotonic() - started
    rows = [
        {
            "query_id": r["query_id"],
            "query": text[r["query_id"]],
            "product_id": r["product_id"],
            "grade_probs": list(label.grade_probs),
            "expected_score": label.expected_score,
            "teacher_model": labeler.name,
            "teacher_version": labeler.version,
            **label.rationale_columns(),
        }
        for r, label in zip(pool, labels, strict=True)
    ]
    storage.write_table(data, "teacher_labels", rows)
    stored = storage.read_table(data, "teacher_labels")
    with_rationale = sum(label.rationale is not None for label in labels)
    stored_with = stored.num_rows - stored.column(RATIONALE_PROBS_FIELDS[0]).null_count
    # Counts at every hop: pool pairs = labels = stored rows; rationales likewise.
    if not len(pool) == len(labels) == stored.num_rows or with_rationale != stored_with:
        raise RuntimeError(
            f"counts differ: {len(pool)} pairs, {len(labels)} labels, {stored.num_rows} stored; "
            f"{with_rationale} labels with a rationale, {stored_with} stored with one"
        )
    teacher_test = ndcg_per_query(labeler, data)
    bm25_test = ndcg_per_query(build_scorer("bm25", data), data)
    return {
        "teacher": {
            "version": labeler.version,
            "rationale_heads": labeler.spec.rationale_heads,
            "dev_ndcg@10": teacher_info["dev"]["ndcg@10"],
            "train_pairs": teacher_info["train_pairs"],
            "train_s": round(teacher_s, 1),
        },
        "labels": {
            "queries": len(chosen),
            "pairs": len(labels),
            "with_rationale": with_rationale,
            "stored": stored.num_rows,
            "stored_with_rationale": stored_with,
            "pairs_per_s": round(len(labels) / label_s, 1),
            "rationale_vs_rules": rationale_agreement(data, full),
        },
        "per_query": {"teacher": teacher_test, "bm25": bm25_test},
    }


def run_student(config: StudentTrainConfig) -> dict[str, Any]:
    """One grid point, in a worker process: train, then per-query test NDCG@10."""
    torch.set_num_threads(1)
    result = train_student(config)
    return {
        "kind": str(config.kind),
        "cot": config.loss_weights.cot,
        "seed": config.seed,
        "steps": result.steps,
        "best_step": result.best_step,
        "dev_ndcg@10": result.best_dev_ndcg10,
        "train_examples": result.train_examples,
        "rationale_examples": result.rationale_examples,
        "pairs_per_s": result.pairs_per_s,
        "per_query": ndcg_per_query(load_student(config.output_dir), config.dataset_dir),
    }


def student_configs(work: Path, args: argparse.Namespace) -> list[StudentTrainConfig]:
    configs = []
    for seed in args.seeds:
        for kind in KINDS:
            for cot in (0.0, args.cot):
                configs.append(
                    StudentTrainConfig(
                        kind=kind,
                        dataset_dir=work / "data",
                        output_dir=work / "students" / f"{kind}-cot{cot}-seed{seed}",
                        num_layers=args.student_layers,
                        max_length=args.student_max_length,
                        queries_per_batch=8,
                        pairs_per_query=args.pairs_per_query,
                        loss_weights=LossWeights(margin_mse=1.0, mse=0.0, kl=0.5, cot=cot),
                        max_steps=args.steps,
                        eval_every=args.eval_every,
                        eval_max_queries=args.dev_queries,
                        patience=100,
                        torch_threads=1,
                        seed=seed,
                        progress=False,
                    )
                )
    return configs


def summarize(runs: list[dict[str, Any]], resamples: int) -> dict:
    """Per kind: each arm's mean over seeds per query, bootstrapped; the paired gap."""
    out: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in runs}):
        arms = {}
        for cot in sorted({r["cot"] for r in runs if r["kind"] == kind}):
            chosen = sorted(
                (r for r in runs if r["kind"] == kind and r["cot"] == cot),
                key=lambda r: r["seed"],
            )
            arms[cot] = [r["per_query"] for r in chosen]
            arm = intervals.estimate(arms[cot], resamples)
            out.setdefault(kind, {})[f"cot={cot}"] = {
                "mean": arm.mean,
                "ci95": [arm.low, arm.high],
                "seeds": [r["seed"] for r in chosen],
                "per_seed_test_ndcg@10": list(arm.seed_means),
                "per_seed_dev_ndcg@10": [r["dev_ndcg@10"] for r in chosen],
            }
        without, with_cot = (arms[c] for c in sorted(arms))
        gap = intervals.paired_difference(with_cot, without, resamples)
        out[kind]["with_minus_without"] = {"mean": gap.mean, "ci95": [gap.low, gap.high]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200, help="labeled queries (70/15/15)")
    parser.add_argument("--keep-train", type=int, default=20, help="train queries kept human")
    parser.add_argument("--augmented-queries", type=int, default=30)
    parser.add_argument("--teacher-epochs", type=float, default=1.0)
    parser.add_argument("--teacher-train-pairs", type=int, default=320, help="0 = all")
    parser.add_argument("--teacher-max-length", type=int, default=48)
    parser.add_argument("--teacher-lr", type=float, default=2e-4)
    parser.add_argument("--teacher-dev-pairs", type=int, default=200)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--student-max-length", type=int, default=24)
    parser.add_argument("--pairs-per-query", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--dev-queries", type=int, default=20, help="dev queries per evaluation")
    parser.add_argument("--cot", type=float, default=0.1, help="CoT weight of the 'with' arm")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if len(args.seeds) < 3:
        parser.error("--seeds: the ablation needs at least 3 seeds")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cot-ablation-"))
    started = time.monotonic()
    prepared = prepare(work, args)
    print(json.dumps({k: v for k, v in prepared.items() if k != "per_query"}), flush=True)

    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_student, c) for c in student_configs(work, args)]
        for future in as_completed(futures):
            run = future.result()
            runs.append(run)
            summary = {k: v for k, v in run.items() if k != "per_query"}
            summary["test_ndcg@10"] = float(np.mean(list(run["per_query"].values())))
            print(json.dumps(summary), flush=True)

    test_queries = sorted(prepared["per_query"]["teacher"])
    if any(sorted(r["per_query"]) != test_queries for r in runs):
        raise RuntimeError("a student was evaluated on other test queries than the teacher")
    references = {
        name: {"mean": ref.mean, "ci95": [ref.low, ref.high]}
        for name, scores in prepared["per_query"].items()
        for ref in [intervals.estimate([scores], args.bootstrap)]
    }
    result = {
        "benchmark": "cot_ablation",
        "conditions": {
            "simulator": {
                "profile": "hard",
                "products": args.products,
                "labeled_queries": args.queries,
                "seed": 0,
            },
            "human_train_queries": args.keep_train,
            "test_queries": len(test_queries),
            "teacher": "all-MiniLM-L6-v2 classifier with rationale heads, rich template, "
            f"{args.teacher_epochs} epochs over {args.teacher_train_pairs or 'all'} of the human "
            f"judgments' pairs, lr {args.teacher_lr}, "
            f"max_length {args.teacher_max_length}",
            "students": f"MiniLM first {args.student_layers - 1} + last layer, query + title, "
            f"{args.student_max_length} tokens, {args.steps} steps of 8 queries x "
            f"{args.pairs_per_query} pairs, lr 1e-4, dev NDCG@10 every {args.eval_every} steps "
            f"on {args.dev_queries} dev queries, best dev checkpoint tested",
            "losses": {"without": "margin_mse 1 + kl 0.5", "with": f"+ cot {args.cot}"},
            "seeds": args.seeds,
            "bootstrap": f"{args.bootstrap} resamples of the test queries, 95% percentile "
            "interval; arm = per-query NDCG@10 averaged over seeds; gap paired by query",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), "
            f"{args.jobs} runs at a time, 1 torch thread each",
            "load_average": list(os.getloadavg()),
        },
        "teacher": prepared["teacher"],
        "labels": prepared["labels"],
        "references_test_ndcg@10": references,
        "students": summarize(runs, args.bootstrap),
        "runs": [{k: v for k, v in r.items() if k != "per_query"} for r in runs],
        "wall_s": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["students"], indent=2))
    print(f"wrote {args.out} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
