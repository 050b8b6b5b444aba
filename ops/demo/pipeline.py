"""The main job: the two papers' distillation loop, end to end, on the embedded stack.

Stages, each writing under one run directory so any of them can be re-run alone
from the previous stage's outputs:

1. ``simulate``   - catalog, queries, human (simulated rater) judgments;
2. ``teacher``    - fine-tune the teacher on the human-labeled train split;
3. ``candidates`` - roll the teacher and the catalog index out to the stack, publish
   augmentation candidates, let teacher-labeling label them through Kafka, wait
   until the label store holds every one of them, and cut the snapshot students read;
4. ``students``   - cross-encoders on human labels only and with growing augmented
   sets, and two-tower students;
5. ``evaluate``   - every model on the test queries' human labels, with latency;
6. ``serve``      - export the best student, serve it from Triton behind
   student-inference, score frontend-style requests over gRPC;
7. ``report``     - Markdown, plots and configuration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ops.demo.report import ModelResult, write_report
from services.core.settings import Settings, get_settings

console = Console(stderr=True)

STAGES = ("simulate", "teacher", "candidates", "students", "evaluate", "serve", "report")


@dataclass(frozen=True)
class DemoScale:
    products: int
    labeled_queries: int
    unlabeled_queries: int
    teacher_epochs: float
    teacher_max_train: int  # 0: every train pair
    augmented_sizes: tuple[int, ...]  # augmented queries per student run, ascending
    per_query: int  # candidates sampled per augmented query
    student_steps: int
    latency_requests: int


SCALES: dict[str, DemoScale] = {
    # End to end in a few minutes: what CI runs.
    "ci": DemoScale(400, 60, 48, 1.0, 320, (12, 24, 48), 8, 12, 5),
    # The README's run: sized for about 20 minutes on 2 CPU cores (28 measured with 100 steps).
    "default": DemoScale(3000, 400, 400, 1.0, 3000, (100, 200, 400), 12, 60, 30),
    "large": DemoScale(20000, 2000, 4000, 2.0, 0, (500, 1000, 2000, 4000), 24, 600, 50),
}


@dataclass(frozen=True)
class DemoRun:
    run_dir: Path
    scale_name: str = "default"
    seed: int = 0
    # The candidates stage fails, with the counts, when labeling takes longer than this.
    labels_timeout_s: float = 1800.0

    @property
    def scale(self) -> DemoScale:
        if self.scale_name not in SCALES:
            raise ValueError(f"scale: expected one of {sorted(SCALES)}, got {self.scale_name!r}")
        return SCALES[self.scale_name]

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def state(self, stage: str) -> dict[str, Any]:
        path = self.run_dir / f"{stage}.json"
        if not path.exists():
            raise FileNotFoundError(f"stage {stage!r} has not run in {self.run_dir}: run it first")
        return json.loads(path.read_text())

    def save_state(self, stage: str, state: Mapping[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / f"{stage}.json").write_text(json.dumps(state, indent=2, default=str) + "\n")

    def config(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "scale": self.scale_name,
            "seed": self.seed,
            **asdict(self.scale),
        }


class DemoStack:
    """The embedded stack, started on first use and rolled as models become ready."""

    def __init__(self, exits: ExitStack) -> None:
        self._exits = exits
        self._stack: Any = None

    def with_env(self, service: str, env: Mapping[str, str]) -> Any:
        """The running stack, with `service` (re)started on `env`."""
        from ops.stack import running_stack

        if self._stack is None:
            # Generous: on a busy machine the services take a while to import torch and faiss.
            self._stack = self._exits.enter_context(running_stack(extra_env=env, timeout_s=120))
        else:
            self._stack.roll(service, env)
        return self._stack

    def address(self, service: str) -> str:
        return self._stack.address(service)

    @property
    def settings(self) -> Settings:
        return self._stack.settings.model_copy(update={"kafka_bootstrap": self._stack.bootstrap})


@contextmanager
def stage(number: int, name: str) -> Iterator[None]:
    console.rule(f"[bold]stage {number}/{len(STAGES)}: {name}")
    started = time.monotonic()
    yield
    console.print(f"[green]✓ {name}[/green] in {time.monotonic() - started:.1f}s")


# -- stages ---------------------------------------------------------------------------


def run_simulate(run: DemoRun, _stack: DemoStack) -> dict[str, Any]:
    from training.data.simulator import simulate
    from training.data.summary import summarize

    s = run.scale
    dataset = run.path("dataset")
    simulate(
        dataset,
        num_products=s.products,
        num_queries=s.labeled_queries,
        num_unlabeled=s.unlabeled_queries,
        seed=run.seed,
    )
    return {"dataset": str(dataset), "summary": summarize(dataset)}


def run_teacher(run: DemoRun, _stack: DemoStack) -> dict[str, Any]:
    from training.teacher.config import TeacherTrainConfig
    from training.teacher.train import train

    s = run.scale
    config = TeacherTrainConfig(
        dataset_dir=run.path("dataset"),
        output_dir=run.path("teacher"),
        epochs=s.teacher_epochs,
        max_train_examples=s.teacher_max_train,
        seed=run.seed,
    )
    return {"checkpoint": str(run.path("teacher")), "summary": train(config)}


def run_candidates(run: DemoRun, stack: DemoStack) -> dict[str, Any]:
    """Augmentation through the services: candidates -> Kafka -> teacher -> Kafka -> label
    store; waits until every published pair is labeled and stored, then cuts the snapshot
    the students train on."""
    from services.candidate_generation.batch import Ledger, run_batch, select_queries
    from services.candidate_generation.index import CatalogIndex, MiniLMEncoder
    from services.candidate_generation.queries import simulator_queries
    from services.candidate_generation.service import CandidateEngine
    from services.candidate_generation.settings import CandidateSettings
    from services.core.bus import Publisher
    from services.label_store.store import LabelStore
    from services.label_store.writer import cut_snapshot, wait_until_stored
    from training.data import storage

    dataset, index_dir = run.path("dataset"), run.path("candidate-index")
    store_dir = run.path("label-store")
    run.state("teacher")
    index = CatalogIndex.build(
        storage.read_table(dataset, "products"), MiniLMEncoder(), progress=True
    )
    index.save(index_dir)
    stack.with_env("label-store", {"RELKD_LABEL_STORE_DIR": str(store_dir)})
    stack.with_env("teacher-labeling", {"RELKD_TEACHER_CHECKPOINT": str(run.path("teacher"))})
    stack.with_env("candidate-generation", {"RELKD_CANDIDATE_INDEX_DIR": str(index_dir)})

    own = CandidateSettings(
        index_dir=index_dir,
        state_dir=run.path("candidate-state"),
        per_query=run.scale.per_query,
        seed=run.seed,
    )
    engine = CandidateEngine.from_settings(own)
    queries = select_queries(
        engine.require_index(),
        simulator_queries(dataset),
        max(run.scale.augmented_sizes),
        seed=run.seed,
    )
    publisher = Publisher(stack.settings)
    ledger = Ledger(own.state_dir / "ledger.sqlite")
    try:
        report = run_batch(engine.require_index(), engine.sampler(), queries, publisher, ledger)
        published = ledger.pairs_by_query(engine.require_index().version)
    finally:
        publisher.close()
        ledger.close()
    # Every selected query's pairs, this run's and an earlier run's alike.
    expected = {q.query_id: published[q.query_id] for q in queries if q.query_id in published}
    console.print(
        f"published {report.pairs_published} candidate pairs for {report.queries_published} "
        f"queries; waiting until the teacher has labeled all {sum(expected.values())} and the "
        "label store has them"
    )
    stored = wait_until_stored(store_dir, expected, timeout_s=run.labels_timeout_s)
    snapshot = cut_snapshot(store_dir, reason="demo candidates") or LabelStore(store_dir).open()
    console.print(f"label store snapshot {snapshot.id}: {snapshot.counts}")
    return {
        "batch": asdict(report),
        "teacher_labels": stored,
        "label_store": str(store_dir),
        "snapshot": snapshot.id,
        "augmented_queries": len(queries),
    }


def student_runs(run: DemoRun) -> list[tuple[str, str, int]]:
    """(run name, student kind, augmented queries) of every student the demo trains."""
    sizes = (0, *run.scale.augmented_sizes)
    runs = [(f"cross-encoder-aug{n}", "cross-encoder", n) for n in sizes]
    runs += [(f"two-tower-aug{n}", "two-tower", n) for n in (0, sizes[-1])]
    return runs


def run_students(run: DemoRun, _stack: DemoStack) -> dict[str, Any]:
    from training.student.config import StudentTrainConfig
    from training.student.train import train

    labels = run.state("candidates")
    trained = {}
    for name, kind, augmented in student_runs(run):
        console.print(f"[bold]student {name}[/bold]")
        config = StudentTrainConfig(
            kind=kind,
            dataset_dir=run.path("dataset"),
            output_dir=run.path("students") / name,
            name=name,
            use_teacher_labels=augmented > 0,
            label_store=Path(labels["label_store"]),
            snapshot=labels["snapshot"],
            augmented_queries=augmented,
            max_steps=run.scale.student_steps,
            eval_every=max(run.scale.student_steps // 2, 1),
            seed=run.seed,
        )
        result = train(config)
        trained[name] = {"kind": kind, "augmented_queries": augmented, **asdict(result)}
    return {"students": trained}


def request_latency_ms(
    scorer: Any, run: DemoRun, products_per_request: int = 100
) -> tuple[float, float]:
    """p50/p99 of scoring one test query against `products_per_request` catalog products."""
    from training.data import storage

    dataset = run.path("dataset")
    queries = storage.read_table(dataset, "queries", ["query"], "test").column("query").to_pylist()
    products = storage.read_table(dataset, "products").slice(0, products_per_request).to_pylist()
    scorer.score_pairs([queries[0]] * len(products), products)  # warm-up
    timings = []
    for query in queries[: run.scale.latency_requests]:
        started = time.perf_counter()
        scorer.score_pairs([query] * len(products), products)
        timings.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(timings, 50)), float(np.percentile(timings, 99))


def _result(
    name: str,
    family: str,
    augmented: int | None,
    metrics: Mapping[str, float],
    latency: tuple[float, float],
) -> dict[str, Any]:
    return asdict(
        ModelResult(
            model=name,
            family=family,
            augmented_queries=augmented,
            ndcg10=metrics["ndcg@10"],
            ndcg5=metrics["ndcg@5"],
            mrr=metrics["mrr"],
            accuracy=metrics.get("grade_accuracy"),
            latency_p50_ms=latency[0],
            latency_p99_ms=latency[1],
        )
    )


def run_evaluate(run: DemoRun, _stack: DemoStack) -> dict[str, Any]:
    from training.eval.evaluate import evaluate_scorer
    from training.eval.scorer import build_scorer
    from training.student.checkpoint import load_student
    from training.teacher.labeler import TeacherLabeler

    dataset = run.path("dataset")
    students = run.state("students")["students"]
    models: list[tuple[str, str, int | None, Any]] = [
        ("bm25", "baseline", None, build_scorer("bm25", dataset)),
        ("bi-encoder (zero-shot MiniLM)", "baseline", None, build_scorer("bi-encoder", dataset)),
        ("teacher", "teacher", None, TeacherLabeler.from_checkpoint(run.path("teacher"))),
    ]
    models += [
        (name, info["kind"], info["augmented_queries"], load_student(run.path("students") / name))
        for name, info in students.items()
    ]
    results = []
    for name, family, augmented, scorer in models:
        console.print(f"evaluating {name}")
        metrics = evaluate_scorer(scorer, dataset, "test", show_progress=True)
        results.append(_result(name, family, augmented, metrics, request_latency_ms(scorer, run)))
    return {"results": results}


def best_cross_encoder(run: DemoRun) -> str:
    """Chosen on the dev split (the trainer's best dev NDCG@10), never on test."""
    students = run.state("students")["students"]
    ranked = sorted(
        (info["best_dev_ndcg10"], name)
        for name, info in students.items()
        if info["kind"] == "cross-encoder"
    )
    return ranked[-1][1]


def run_serve(run: DemoRun, stack: DemoStack, exits: ExitStack) -> dict[str, Any]:
    from ops.demo.frontend import GrpcStudentScorer
    from services.student_inference.backends import triton_env
    from services.student_inference.triton_runtime import TritonServer
    from training.eval.evaluate import evaluate_scorer
    from training.export.exporter import export_student
    from training.export.onnx_export import INT8_MIN_SPEARMAN
    from training.export.triton_repo import recorded_int8_spearman, write_cpu_repository

    best = best_cross_encoder(run)
    export_dir = run.path("export") / best
    export_student(run.path("students") / best, export_dir)
    # int8 on CPU: about twice the fp32 throughput, served only when it keeps fp32's
    # ranking (Spearman >= INT8_MIN_SPEARMAN, docs/triton.md); fp32 otherwise.
    int8 = recorded_int8_spearman(export_dir) >= INT8_MIN_SPEARMAN
    precision = "int8" if int8 else "fp32"
    model = write_cpu_repository(
        export_dir, run.path("triton-repository"), model_name="student", int8=int8
    )
    triton = exits.enter_context(
        TritonServer(run.path("triton-repository"), model_control="explicit", load_models=(model,))
    )
    stack.with_env("student-inference", triton_env(triton, model))
    with GrpcStudentScorer(stack.address("student-inference"), name=f"served: {best}") as served:
        metrics = evaluate_scorer(served, run.path("dataset"), "test", show_progress=True)
        latency = request_latency_ms(served, run)
        examples = served.examples(run.path("dataset"), count=5)
    result = _result(f"served via Triton ({precision}): {best}", "served", None, metrics, latency)
    return {"student": best, "result": result, "examples": examples}


def run_report(run: DemoRun, _stack: DemoStack) -> dict[str, Any]:
    results = [ModelResult(**r) for r in run.state("evaluate")["results"]]
    served: list[dict[str, Any]] = []
    notes = []
    try:
        serve = run.state("serve")
        results.append(ModelResult(**serve["result"]))
        served = serve["examples"]
    except FileNotFoundError:
        notes.append("The serve stage has not run: no Triton-served row.")
    labels = run.state("candidates")
    notes.append(
        f"Augmented set: {labels['teacher_labels']} teacher-labeled pairs over "
        f"{labels['augmented_queries']} generated queries, labeled through Kafka."
    )
    path = write_report(run.path("report"), results, run.config(), served, notes)
    return {"report": str(path)}


def run_demo(run: DemoRun, stages: tuple[str, ...] = STAGES) -> Path:
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"stage: unknown {sorted(unknown)}, expected some of {STAGES}")
    started = time.monotonic()
    with ExitStack() as exits:
        stack = DemoStack(exits)
        runners = {
            "simulate": run_simulate,
            "teacher": run_teacher,
            "candidates": run_candidates,
            "students": run_students,
            "evaluate": run_evaluate,
            "serve": lambda r, s: run_serve(r, s, exits),
            "report": run_report,
        }
        for number, name in enumerate(STAGES, start=1):
            if name in stages:
                with stage(number, name):
                    run.save_state(name, runners[name](run, stack))
    console.print(f"demo finished in {time.monotonic() - started:.0f}s")
    return run.path("report") / "report.md"


def default_run_dir() -> Path:
    return get_settings().data_dir / "demo"
