"""`relkd loop demo`: the distillation loop following a drifting catalog, end to end.

The embedded stack (`relkd up`'s :func:`ops.stack.running_stack`: a Kafka broker and
every service as a process, Triton serving the student) runs rounds of simulated drift
(:mod:`training.data.drift`):

* **round 0** (before drift): the round-0 traffic's queries are published as
  ``new_query`` relabel requests; candidate-generation samples candidates, the teacher
  labels them, the label store keeps them; the controller trains the first student on
  the snapshot and promotes it (Triton version 1). That student is also kept *frozen*.
* **drift rounds**: the round's new and renamed products go out as ``product_changed``
  requests (catalog index and label store follow); a frontend retrieves each traffic
  query's products from candidate-generation (``Generate``) and scores them through
  student-inference (``Score``), which samples every request to ``relevance.served.v1``;
  the disagreement monitor asks the teacher about the served pairs and publishes
  ``new_query`` and ``disagreement`` requests; candidates, teacher labels and the label
  store follow; the demo cuts a snapshot and the controller runs a round on it: train,
  gate, promote (a new Triton version that then serves) or refuse.

Every hop is counted, and the counts must match (served requests = served samples,
unknown traffic queries = ``new_query`` requests, candidate pairs = labels stored,
labels stored = labels added to the snapshot, changed products = products in it);
a mismatch stops the demo with the counts.

Each round is then measured on that round's drifted test queries (human-judged by the
simulator's raters): the student serving after the round, the candidate, the frozen
round-0 student and the teacher, with bootstrap intervals over queries. The report
(``report.md``, ``ndcg_by_round.png``, ``loop_demo.json``) is written after every round.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from services.core.settings import get_settings

console = Console(stderr=True)
PRODUCER = "relkd-loop-demo"
MODEL_NAME = "relkd-student"


@dataclass(frozen=True)
class LoopScale:
    drift: dict[str, Any]  # DriftConfig fields (pool: PoolShape fields)
    teacher_epochs: float
    teacher_max_train: int
    teacher_max_length: int
    student: dict[str, Any]  # StudentTrainConfig fields every candidate starts from
    epochs: float
    min_steps: int
    max_steps: int
    per_query: int  # candidates per new query (candidate-generation)
    retrieve_k: int  # products the frontend retrieves and scores per query
    gate_traffic_queries: int
    bootstrap_samples: int
    labels_timeout_s: float
    p99_budget_ms: float = 10_000.0


SCALES: dict[str, LoopScale] = {
    # The test suite's run: tiny everything, a few minutes on 2 CPU cores.
    "ci": LoopScale(
        drift={
            "products": 400,
            "base_queries": 40,
            "bootstrap_queries": 16,
            "traffic_queries": 10,
            "test_queries": 10,
            "teacher_queries": 60,
            "pool": {
                "exact": 4,
                "same_type": 3,
                "substitute": 3,
                "complement": 2,
                "shared_words": 2,
                "random": 2,
            },
        },
        teacher_epochs=1.0,
        teacher_max_train=320,
        teacher_max_length=64,
        student={
            "num_layers": 1,
            "max_length": 24,
            "freeze_embeddings": True,
            "queries_per_batch": 8,
            "pairs_per_query": 4,
            "eval_every": 10,
            "eval_max_queries": 10,
            "lr": 3e-4,
        },
        epochs=2.0,
        min_steps=10,
        max_steps=20,
        per_query=6,
        retrieve_k=8,
        gate_traffic_queries=4,
        bootstrap_samples=200,
        labels_timeout_s=300.0,
    ),
    # docs/loop.md's run: sized to finish within the hour on the 2-core machine shared
    # with other work it was measured on.
    "default": LoopScale(
        drift={
            "products": 600,
            "base_queries": 150,
            "bootstrap_queries": 60,
            "traffic_queries": 40,
            "test_queries": 50,
            "teacher_queries": 300,
        },
        teacher_epochs=1.0,
        teacher_max_train=960,
        teacher_max_length=48,
        student={
            "num_layers": 2,
            "max_length": 32,
            "freeze_embeddings": True,
            "queries_per_batch": 8,
            "pairs_per_query": 4,
            "eval_every": 30,
            "eval_max_queries": 30,
            "lr": 3e-4,
        },
        epochs=3.0,
        min_steps=50,
        max_steps=90,
        per_query=6,
        retrieve_k=12,
        gate_traffic_queries=20,
        bootstrap_samples=1000,
        labels_timeout_s=3600.0,
    ),
}


# -- counting -------------------------------------------------------------------------


class CountMismatch(RuntimeError):
    """A hop let through a different number of things than went in."""


def expect_equal(what: str, went_in: int, came_out: int) -> None:
    if went_in != came_out:
        raise CountMismatch(f"{what}: {went_in} went in, {came_out} came out")


@dataclass
class Hops:
    """What went through each hop in one round (docs/loop.md#the-loop-demo)."""

    products_changed: int = 0
    traffic_queries: int = 0
    unknown_queries: int = 0  # traffic queries the label store had not seen
    score_requests: int = 0
    served_samples: int = 0
    served_pairs: int = 0
    new_query_requests: int = 0
    disagreement_requests: int = 0
    candidate_batches: int = 0
    candidate_pairs: int = 0
    labels_stored: int = 0
    labels_added: int = 0
    serving_version: str = ""


# -- evaluation -------------------------------------------------------------------------


@dataclass
class Quality:
    ndcg10: float
    ci95: tuple[float, float]


class Evaluator:
    """Scores students and the teacher on a round's drifted test queries (per-query
    NDCG@10, bootstrap interval over queries: the gate's own functions)."""

    def __init__(self, teacher: Path, samples: int, seed: int) -> None:
        self.teacher = teacher
        self.samples = samples
        self.seed = seed
        self._scorers: dict[str, Any] = {}

    def _scorer(self, path: str) -> Any:
        if path not in self._scorers:
            if path == str(self.teacher):
                from training.teacher.labeler import TeacherLabeler

                self._scorers[path] = TeacherLabeler.from_checkpoint(self.teacher, device="cpu")
            else:
                from training.student.checkpoint import load_student

                self._scorers[path] = load_student(path, device="cpu")
        return self._scorers[path]

    def per_query(self, dataset: Path, checkpoint: Path | str) -> Any:
        from services.controller import gate

        test = gate.build_gate_set(dataset, "test", [], {})
        return gate.per_query_ndcg(test, gate.score_run(self._scorer(str(checkpoint)), test))

    def quality(self, values: Any, offset: int = 0) -> Quality:
        from training.eval.intervals import bootstrap_ci

        ci = bootstrap_ci(values, self.samples, 0.95, self.seed + offset)
        return Quality(float(values.mean()), ci)


# -- the run ------------------------------------------------------------------------------


@dataclass
class LoopRun:
    run_dir: Path
    scale_name: str
    seed: int = 0
    teacher: Path | None = None  # an existing teacher checkpoint instead of training one
    rows: list[dict[str, Any]] = field(default_factory=list)
    hops: list[dict[str, Any]] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)  # per round: versions, deltas

    @property
    def scale(self) -> LoopScale:
        if self.scale_name not in SCALES:
            raise ValueError(f"scale: expected one of {sorted(SCALES)}, got {self.scale_name!r}")
        return SCALES[self.scale_name]

    def path(self, name: str) -> Path:
        return self.run_dir / name


@contextmanager
def step(title: str) -> Iterator[None]:
    console.rule(f"[bold]{title}")
    started = time.monotonic()
    yield
    console.print(f"[green]✓ {title}[/green] in {time.monotonic() - started:.1f}s")


def drift_config(run: LoopRun) -> Any:
    from training.data.drift import DriftConfig
    from training.data.simulator import PoolShape

    fields_ = dict(run.scale.drift)
    if "pool" in fields_:
        fields_["pool"] = PoolShape(**fields_["pool"])
    return DriftConfig(**fields_, seed=run.seed)


def train_teacher(run: LoopRun, dataset: Path) -> Path:
    from training.teacher.config import TeacherTrainConfig
    from training.teacher.train import train

    out = run.path("teacher")
    s = run.scale
    train(
        TeacherTrainConfig(
            dataset_dir=dataset,
            output_dir=out,
            epochs=s.teacher_epochs,
            max_train_examples=s.teacher_max_train,
            max_length=s.teacher_max_length,
            max_dev_examples=s.teacher_max_train // 4,
            # One thread: on a CPU shared with the services (and more) extra threads only contend.
            num_threads=1,
            seed=run.seed,
        )
    )
    return out


def controller_settings(run: LoopRun, dataset: Path, triton_url: str | None = None) -> Any:
    from services.controller.settings import ControllerSettings

    s = run.scale
    config = run.path("student.yaml")
    config.write_text(
        yaml.safe_dump({**s.student, "progress": False, "torch_threads": 1}, sort_keys=True)
    )
    return ControllerSettings(
        work_dir=run.path("controller"),
        ledger=run.path("controller") / "ledger.sqlite",
        dataset_dir=dataset,
        student_config=config,
        epochs=s.epochs,
        min_steps=s.min_steps,
        max_steps=s.max_steps,
        gate_traffic_queries=s.gate_traffic_queries,
        bootstrap_samples=s.bootstrap_samples,
        latency_requests=10,
        # Every round's student has the same shape, so its latency does not drift; on a
        # CPU shared with the whole stack (and more) the p99 measures the load, not the
        # student (a 2-layer student measured 3.9 s at a load average of 18).
        p99_budget_ms=s.p99_budget_ms,
        triton_repository=run.path("triton"),
        model_name=MODEL_NAME,
        triton_url=triton_url,
        seed=run.seed,
    )


def stack_env(run: LoopRun, world: Any, teacher: Path) -> dict[str, str]:
    huge = str(10**12)
    return {
        "RELKD_TEACHER_CHECKPOINT": str(teacher),
        "RELKD_CANDIDATE_INDEX_DIR": str(run.path("index")),
        "RELKD_CANDIDATE_STATE_DIR": str(run.path("candidate-state")),
        "RELKD_CANDIDATE_QUERY_POOL": str(world.base),
        "RELKD_CANDIDATE_PER_QUERY": str(run.scale.per_query),
        "RELKD_CANDIDATE_QUERIES_PER_CHANGED_PRODUCT": "1",
        "RELKD_CANDIDATE_SEED": str(run.seed),
        "RELKD_LABEL_STORE_DIR": str(run.path("label-store")),
        # The demo cuts the snapshot each round trains on, once every label is in.
        "RELKD_LABEL_STORE_SNAPSHOT_MIN_ROWS": huge,
        "RELKD_LABEL_STORE_SNAPSHOT_MAX_AGE_S": huge,
        # Every served request is sampled: the monitor sees all the traffic.
        "RELKD_SERVED_SAMPLE_RATE": "1.0",
        "RELKD_MONITOR_KNOWN_REFRESH_S": "1",
        "RELKD_MONITOR_PAIRS_PER_SECOND": "10000",
        # A batch of labels can take minutes on a busy CPU.
        "RELKD_KAFKA_MAX_POLL_INTERVAL_MS": "600000",
        "TOKENIZERS_PARALLELISM": "false",
    }


class Pipeline:
    """The running stack as the demo drives and watches it."""

    def __init__(self, run: LoopRun, stack: Any, exits: ExitStack) -> None:
        from kafka import KafkaAdminClient

        from contracts.topics import CANDIDATES, RELABEL_REQUESTS, SERVED
        from ops.loop.kafka_progress import TopicTail
        from services.candidate_generation.settings import CandidateSettings
        from services.core.bus import Publisher
        from services.disagreement_monitor.service import MonitorSettings
        from services.label_store.settings import LabelStoreSettings

        self.run = run
        self.stack = stack
        self.store_dir = run.path("label-store")
        settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
        self.publisher = Publisher(settings)
        exits.callback(self.publisher.close)
        self.admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
        exits.callback(self.admin.close)
        self.tails = {t.name: TopicTail(stack.bootstrap, t) for t in (SERVED, RELABEL_REQUESTS)}
        self.tails[CANDIDATES.name] = TopicTail(stack.bootstrap, CANDIDATES)
        for tail in self.tails.values():
            exits.callback(tail.close)
        self.served, self.relabel = self.tails[SERVED.name], self.tails[RELABEL_REQUESTS.name]
        self.candidates = self.tails[CANDIDATES.name]
        own = CandidateSettings()
        self.relabel_group = own.relabel_group
        self.monitor_group = MonitorSettings().group
        self.store_products_group = f"{LabelStoreSettings().group}-products"
        self.timeout_s = run.scale.labels_timeout_s
        # Cumulative: what every round so far published and stored.
        self.requested_pairs: set[tuple[str, str]] = set()
        self.seen = {name: 0 for name in self.tails}

    def _new(self, name: str) -> list[Any]:
        tail = self.tails[name]
        fresh = tail.messages[self.seen[name] :]
        self.seen[name] = len(tail.messages)
        return fresh

    def _consumed(self, group: str, tail: Any) -> None:
        from ops.loop.kafka_progress import wait_consumed

        wait_consumed(self.admin, group, tail, self.timeout_s, lambda m: console.print(m))

    def publish_new_queries(self, queries: Mapping[str, str]) -> None:
        from relevance.v1 import topics_pb2

        from contracts.topics import RELABEL_REQUESTS
        from services.core.bus import event_meta

        for query_id, text in queries.items():
            request = topics_pb2.RelabelRequest(
                meta=event_meta(PRODUCER),
                new_query=topics_pb2.NewQuery(query_id=query_id, query=text),
            )
            self.publisher.publish(RELABEL_REQUESTS, query_id, request)
        self.publisher.flush()

    def publish_products(self, products: list[dict[str, Any]], batch: int = 200) -> None:
        """The round's catalog changes as product_changed requests; returns once the
        catalog index and the label store have taken them."""
        from contracts.products import product_message
        from services.candidate_generation.service import (
            product_changed_request,
            publish_relabel_request,
        )

        for start in range(0, len(products), batch):
            chunk = products[start : start + batch]
            request = product_changed_request([product_message(p) for p in chunk], PRODUCER)
            publish_relabel_request(self.publisher, request)
        self.publisher.flush()
        self.relabel.catch_up(self.timeout_s)
        self._consumed(self.relabel_group, self.relabel)
        self._consumed(self.store_products_group, self.relabel)

    def serve_traffic(self, queries: list[str], hops: Hops, version: str) -> None:
        """A frontend: retrieve each query's products, score them through the student;
        every answer must come from model `version` (the one the ledger says serves)."""
        from relevance.v1 import candidate_generation_pb2, candidate_generation_pb2_grpc

        from ops.demo.frontend import GrpcStudentScorer
        from services.core.grpc_security import client_channel

        with (
            client_channel(self.stack.address("candidate-generation"), get_settings()) as channel,
            GrpcStudentScorer(self.stack.address("student-inference"), timeout_s=60) as scorer,
        ):
            retrieval = candidate_generation_pb2_grpc.CandidateGenerationStub(channel)
            for n, query in enumerate(queries, start=1):
                found = retrieval.Generate(
                    candidate_generation_pb2.GenerateRequest(
                        query=query, k=self.run.scale.retrieve_k
                    ),
                    timeout=60,
                )
                products = [
                    {
                        "product_id": c.product.product_id,
                        "title": c.product.title,
                        "product_type": c.product.product_type,
                        "brand": c.product.brand,
                    }
                    for c in found.candidates
                ]
                scorer.score(query, products)
                if scorer.serving_version != version:
                    raise CountMismatch(
                        f"Score answered by model version {scorer.serving_version!r}, but the "
                        f"ledger's serving version is {version!r} ({scorer.model})"
                    )
                hops.score_requests += 1
                hops.served_pairs += len(products)
                if n % 50 == 0 or n == len(queries):
                    console.print(f"  frontend: {n}/{len(queries)} queries scored ({scorer.model})")
            hops.serving_version = version

    def wait_served(self, hops: Hops) -> None:
        """Every Score request became a served sample and the monitor handled them all."""
        deadline = time.monotonic() + self.timeout_s
        while sum(1 for _ in self.served.messages[self.seen[self.served.topic.name] :]) < (
            hops.score_requests
        ):
            if time.monotonic() > deadline:
                break
            self.served.poll()
        self.served.catch_up(self.timeout_s)
        samples = self._new(self.served.topic.name)
        hops.served_samples = len(samples)
        expect_equal("Score requests -> served samples", hops.score_requests, len(samples))
        expect_equal(
            "served pairs -> pairs in served samples",
            hops.served_pairs,
            sum(len(s.products) for s in samples),
        )
        self._consumed(self.monitor_group, self.served)

    def wait_labeled(self, hops: Hops, expected_new_queries: set[str]) -> Any:
        """Relabel requests -> candidates -> teacher labels -> label store; cuts the
        snapshot once every requested pair is stored."""
        from services.label_store.store import LabelStore
        from services.label_store.writer import cut_snapshot, wait_until_stored

        self.relabel.catch_up(self.timeout_s)
        requests = self._new(self.relabel.topic.name)
        kinds = Counter(r.WhichOneof("kind") for r in requests)
        hops.new_query_requests = kinds["new_query"]
        hops.unknown_queries = len(expected_new_queries)
        hops.disagreement_requests = kinds["disagreement"]
        asked = {r.new_query.query_id for r in requests if r.WhichOneof("kind") == "new_query"}
        expect_equal(
            "queries unknown to the label store -> new_query requests",
            len(expected_new_queries),
            len(asked & expected_new_queries),
        )
        self._consumed(self.relabel_group, self.relabel)
        self.candidates.catch_up(self.timeout_s)
        batches = self._new(self.candidates.topic.name)
        hops.candidate_batches = len(batches)
        batch_queries = {b.query_id for b in batches}
        missing = asked - batch_queries
        if missing:
            raise CountMismatch(f"new_query requests without a candidate batch: {sorted(missing)}")
        disputed = {
            (r.disagreement.query_id, r.disagreement.product_id)
            for r in requests
            if r.WhichOneof("kind") == "disagreement"
        }
        batch_pairs = {(b.query_id, p.product_id) for b in batches for p in b.products}
        if disputed - batch_pairs:
            raise CountMismatch(
                f"disagreement requests without a candidate batch: {sorted(disputed - batch_pairs)}"
            )
        before = len(self.requested_pairs)
        self.requested_pairs |= batch_pairs
        hops.candidate_pairs = len(self.requested_pairs) - before
        per_query = Counter(q for q, _ in self.requested_pairs)
        console.print(
            f"  {len(requests)} relabel requests ({dict(kinds)}) -> {len(batches)} candidate "
            f"batches, {hops.candidate_pairs} new pairs; waiting until the teacher has labeled "
            f"all {len(self.requested_pairs)} and the label store has them"
        )
        stored = wait_until_stored(self.store_dir, dict(per_query), timeout_s=self.timeout_s)
        store = LabelStore(self.store_dir)
        previous = store.latest_id()
        before_labels = store.open(previous).counts.get("labels", 0) if previous else 0
        snapshot = cut_snapshot(self.store_dir, reason=f"loop demo round {len(self.run.rows)}")
        if snapshot is None:
            snapshot = store.open()
        labels = int(snapshot.counts.get("labels", 0))
        hops.labels_stored = stored
        hops.labels_added = labels - before_labels
        expect_equal("pairs requested -> labels in the snapshot", len(self.requested_pairs), labels)
        expect_equal("new pairs requested -> labels added", hops.candidate_pairs, hops.labels_added)
        return snapshot


def serving_version(record: Any) -> str:
    return str(record.candidate_version) if record is not None else "-"


def run_loop_demo(run: LoopRun, json_path: Path | None = None) -> Path:
    from ops.loop.cli import build_controller
    from ops.loop.report import write_loop_report
    from ops.stack import running_stack
    from services.controller.ledger import Decision, Ledger
    from services.label_store.store import LabelStore
    from services.student_inference.backends import triton_env
    from services.student_inference.triton_runtime import TritonServer
    from training.data import storage
    from training.data.drift import changed_products, simulate_drift

    started = time.monotonic()
    run.run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as exits:
        with step("simulate the drifting world"):
            world = simulate_drift(run.path("world"), drift_config(run))
            for r in world.summary()["rounds"][1:]:
                types, brands = ", ".join(r["new_types"]), ", ".join(r["new_brands"])
                console.print(
                    f"  round {r['round']}: {r['new_products']} new products (types "
                    f"{types or '-'}; brands {brands or '-'}), {r['renamed_products']} renamed, "
                    f"{r['traffic_queries']} traffic queries"
                )
        teacher = run.teacher
        if teacher is None:
            with step("teacher: fine-tune on the whole world's judgments"):
                teacher = train_teacher(run, world.teacher)
        with step("catalog index (round 0's catalog)"):
            from services.candidate_generation.index import CatalogIndex, MiniLMEncoder

            CatalogIndex.build(
                storage.read_table(world.base, "products"), MiniLMEncoder(), progress=True
            ).save(run.path("index"))
        with step("embedded stack: broker and services"):
            stack = exits.enter_context(
                running_stack(extra_env=stack_env(run, world, teacher), timeout_s=300)
            )
            console.print(f"  kafka {stack.bootstrap}; service logs in {stack.log_dir}")
        pipeline = Pipeline(run, stack, exits)
        evaluator = Evaluator(teacher, run.scale.bootstrap_samples, run.seed)
        store = LabelStore(run.path("label-store"))
        ledger = Ledger(controller_settings(run, world.base).ledger)
        triton_url: str | None = None
        frozen: Path | None = None
        rounds = world.summary()["config"]["rounds"]

        for number in range(rounds + 1):
            hops = Hops()
            dataset = world.catalog(number)
            with step(f"round {number}: {'before drift' if number == 0 else 'drift'}"):
                traffic = storage.read_table(dataset, "queries", ["query_id", "query"], "unlabeled")
                texts = traffic.column("query").to_pylist()
                hops.traffic_queries = len(texts)
                if number == 0:
                    # No student serves yet: round 0's traffic log goes straight to labeling.
                    queries = dict(zip(traffic.column("query_id").to_pylist(), texts, strict=True))
                    pipeline.publish_new_queries(queries)
                    expected = set(queries)
                else:
                    from contracts.text import query_id_for

                    changes = changed_products(world, number)
                    hops.products_changed = len(changes)
                    console.print(f"  publishing {len(changes)} new and renamed products")
                    pipeline.publish_products(changes)
                    pipeline.serve_traffic(texts, hops, serving_version(ledger.serving()))
                    pipeline.wait_served(hops)
                    expected = {query_id_for(t) for t in texts} - set(store.open().known_queries())
                snapshot = pipeline.wait_labeled(hops, expected)
                if number > 0:
                    in_store = snapshot.product_rows([p["product_id"] for p in changes])
                    stale = [
                        p["product_id"]
                        for p in changes
                        if in_store.get(p["product_id"], {}).get("title") != p["title"]
                    ]
                    if stale:
                        raise CountMismatch(
                            f"{len(stale)} changed products not in snapshot {snapshot.id} with "
                            f"their new title: {stale[:5]}"
                        )
                console.print(f"  training round on snapshot {snapshot.id}: {snapshot.counts}")
                # The gate's human queries are the round's fresh judgments (world.human).
                settings = controller_settings(run, world.human(number), triton_url)
                controller = build_controller(settings, store)
                record = controller.run_round(snapshot.id, trigger=f"loop demo round {number}")
                console.print(f"  [bold]{record.decision}[/bold]: {record.reason}", highlight=False)
                if record.decision == Decision.FAILED:
                    raise RuntimeError(f"round {number} failed: {record.reason}")
                if number == 0:
                    if record.decision != Decision.PROMOTED:
                        raise RuntimeError(f"the first student was not promoted: {record.reason}")
                    frozen = Path(str(record.candidate_checkpoint))
                    triton = exits.enter_context(
                        TritonServer(
                            settings.triton_repository,
                            model_control="explicit",
                            load_models=(MODEL_NAME,),
                            log_path=stack.log_dir / "triton.log",
                        )
                    )
                    stack.roll("student-inference", triton_env(triton, MODEL_NAME))
                    # From now on a promotion loads the new version into this Triton.
                    triton_url = triton.grpc_url
                serving = ledger.serving()
                assert frozen is not None and serving is not None
                with step(f"round {number}: evaluate on the drifted test queries"):
                    teacher_q = evaluator.per_query(dataset, teacher)
                    frozen_q = evaluator.per_query(dataset, frozen)
                    serving_q = evaluator.per_query(dataset, str(serving.candidate_checkpoint))
                    candidate_q = evaluator.per_query(dataset, str(record.candidate_checkpoint))
                cand, serv = evaluator.quality(candidate_q, 0), evaluator.quality(serving_q, 1)
                delta = evaluator.quality(serving_q - frozen_q, 2)
                row = {
                    "round": number,
                    "labels_added": hops.labels_added,
                    "snapshot": snapshot.id,
                    "decision": str(record.decision),
                    "reason": record.reason,
                    "candidate": {"ndcg@10": cand.ndcg10, "ci95": list(cand.ci95)},
                    "serving": {"ndcg@10": serv.ndcg10, "ci95": list(serv.ci95)},
                    "frozen": {"ndcg@10": float(frozen_q.mean())},
                    "teacher": {"ndcg@10": float(teacher_q.mean())},
                }
                run.rows.append(row)
                run.hops.append({"round": number, **asdict(hops)})
                run.extra.append(
                    {
                        "round": number,
                        "ledger_round": record.round,
                        "serving_version": serving_version(serving),
                        "serving_minus_frozen": {"value": delta.ndcg10, "ci95": list(delta.ci95)},
                        "test_queries": len(frozen_q),
                        "train_steps": record.train_steps,
                        "gate": record.to_json()["metrics"],
                        "label_counts": record.label_counts,
                    }
                )
                console.print(
                    f"  NDCG@10 on round {number}'s drifted test queries: serving "
                    f"{serv.ndcg10:.4f} [{serv.ci95[0]:.4f}, {serv.ci95[1]:.4f}], frozen "
                    f"{frozen_q.mean():.4f}, teacher {teacher_q.mean():.4f}; serving - frozen "
                    f"{delta.ndcg10:+.4f} [{delta.ci95[0]:+.4f}, {delta.ci95[1]:+.4f}]",
                    highlight=False,
                )
                write_loop_report(run, world.summary(), json_path, time.monotonic() - started)
    console.print(f"loop demo finished in {time.monotonic() - started:.0f}s")
    return run.path("report") / "report.md"


def use_free_ports() -> None:
    """The demo runs a stack of its own: services whose port is not set (RELKD_*_PORT)
    take free ports, so the demo never collides with a `relkd up` beside it."""
    from services.core.broker import free_port
    from services.serve import SERVICES

    for spec in SERVICES.values():
        os.environ.setdefault(f"RELKD_{spec.port_setting.upper()}", str(free_port()))
    get_settings.cache_clear()


def demo_command(
    scale: Annotated[str, typer.Option(help=f"Run size: {', '.join(SCALES)}.")] = "default",
    out: Annotated[
        Path | None, typer.Option(help="Run directory [default: RELKD_DATA_DIR/loop-demo].")
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the rounds as JSON here (docs/loop.md)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the drift, sampling and training.")] = 0,
    teacher: Annotated[
        Path | None,
        typer.Option(help="Label with this teacher checkpoint instead of training one."),
    ] = None,
) -> None:
    """Rounds of simulated drift through the embedded stack: served traffic, disagreement
    monitor, relabel requests, teacher labels, label store, controller rounds; writes a
    report with NDCG@10 per round for the serving, a frozen round-0 student and the teacher."""
    from ops.stack import StopRequested, stop_on_signal
    from services.core.logging import configure_logging

    if scale not in SCALES:
        raise typer.BadParameter(f"expected one of {', '.join(SCALES)}", param_hint="--scale")
    if teacher is not None and not (teacher / "teacher.json").is_file():
        raise typer.BadParameter(f"{teacher}: no teacher.json", param_hint="--teacher")
    stop_on_signal()
    use_free_ports()
    configure_logging("relkd-loop-demo", get_settings().log_level)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run = LoopRun(out or get_settings().data_dir / "loop-demo", scale, seed, teacher)
    try:
        report = run_loop_demo(run, json_file)
    except StopRequested:
        console.print("[yellow]stopped; everything the demo started is stopped")
        raise typer.Exit(130) from None
    typer.echo(f"report: {report}")
    if json_file is not None:
        typer.echo(f"json: {json_file}")
