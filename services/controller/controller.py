"""One controller round, the thresholds that start one, and rollback.

A round (docs/loop.md):

1. takes the newest label store snapshot (by id) and holds out a fresh slice of its
   traffic queries (ones the serving student's snapshot did not have) for the gate;
2. writes the round's training dataset (the human dataset's tables, plus the held-out
   queries as test-split queries so the trainer drops their labels) and a
   :class:`StudentTrainConfig` whose step budget is ``epochs`` passes over the training
   queries;
3. trains the candidate through a :class:`Trainer` (a local subprocess here; a
   Kubernetes Job through ops/jobs/launcher.py on a cluster) and exports it (fp32 + int8);
4. runs the gate (:mod:`services.controller.gate`) against the serving student;
5. promotes through a :class:`Promoter` (a Triton model version here; KServe canary then
   promote on a cluster) or refuses, and appends the round to the ledger.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from prometheus_client import Counter, Gauge, Histogram

from contracts.artifacts import CROSS_ENCODER_INT8, CROSS_ENCODER_ONNX
from contracts.label_snapshots import SNAPSHOTS_DIR
from contracts.schema import Split
from services.controller import gate as gates
from services.controller.ledger import Decision, Ledger, Metric, RoundRecord
from services.controller.settings import ControllerSettings
from services.core import process
from services.label_store.store import LabelStore, Snapshot
from training.data import storage
from training.student.config import StudentTrainConfig

log = logging.getLogger(__name__)

ROUNDS = Counter("relkd_controller_rounds_total", "Controller rounds by decision.", ["decision"])
GATE_NDCG = Gauge(
    "relkd_controller_gate_ndcg_at_10", "NDCG@10 on the last round's gate set.", ["student"]
)
SERVING_ROUND = Gauge("relkd_controller_serving_round", "Round whose student serves (0: none).")
PENDING_LABELS = Gauge(
    "relkd_controller_pending_labels", "Labels in the newest snapshot not yet trained on."
)
DISAGREEMENT = Gauge("relkd_controller_live_disagreement_rate", "Last live disagreement rate read.")
ROUND_SECONDS = Histogram(
    "relkd_controller_round_seconds",
    "Wall time of a round (training, export, gate, rollout).",
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400),
)

TRAFFIC_QUERY_TYPE = "gate-traffic"


class TrainingFailed(RuntimeError):
    """The candidate's training run failed; the message says where to look."""


class Trainer(Protocol):
    def train(self, round_dir: Path, config: StudentTrainConfig) -> Path:
        """Train `config` to completion; returns the checkpoint directory."""
        ...


class Promoter(Protocol):
    def promote(self, export_dir: Path, version: int) -> str:
        """Serve the export as `version`; returns what now serves, in words."""
        ...

    def rollback(self, version: int) -> str:
        """Stop serving `version`; the previous promoted version serves again."""
        ...


def write_config(round_dir: Path, config: StudentTrainConfig) -> Path:
    path = round_dir / "student.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=True))
    return path


_TRAIN_STOP_GRACE_S = 10.0


class LocalTrainer:
    """The run spec as `python -m training.student.train --config FILE` on this machine."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    def train(self, round_dir: Path, config: StudentTrainConfig) -> Path:
        config_file = write_config(round_dir, config)
        log_file = round_dir / "train.log"
        log_file.unlink(missing_ok=True)
        # spawn: the training dies with the controller, SIGKILL included.
        child = process.spawn(
            [sys.executable, "-m", "training.student.train", "--config", str(config_file)],
            log_file,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        try:
            returncode = child.wait(self.timeout_s)
        except subprocess.TimeoutExpired as error:
            process.stop(child, _TRAIN_STOP_GRACE_S)
            raise TrainingFailed(
                f"training ran past {self.timeout_s:g} s; log {log_file}"
            ) from error
        except BaseException:  # e.g. Ctrl-C while waiting: stop what we started
            process.stop(child, _TRAIN_STOP_GRACE_S)
            raise
        if returncode != 0:
            tail = log_file.read_text().strip().splitlines()[-5:]
            raise TrainingFailed(
                f"training exited {returncode}; log {log_file}: " + " | ".join(tail)
            )
        return config.output_dir


class TritonPromoter:
    """Embedded stack: each promotion is a new version of the model in the Triton
    repository (latest-version policy: the highest version serves); a rollback moves
    the version out of the repository. With `triton_url` the server reloads the model."""

    def __init__(
        self, repository: Path, model_name: str, int8: bool, triton_url: str | None = None
    ) -> None:
        self.repository = repository
        self.model_name = model_name
        self.int8 = int8
        self.triton_url = triton_url

    def promote(self, export_dir: Path, version: int) -> str:
        from training.export.triton_repo import write_triton_repository

        write_triton_repository(
            export_dir,
            self.repository,
            variant="cpu",
            model_name=self.model_name,
            version=version,
            precision="int8" if self.int8 else "fp32",
        )
        self._reload()
        return f"Triton {self.model_name} version {version}"

    def rollback(self, version: int) -> str:
        model_dir = self.repository / self.model_name
        current = model_dir / str(version)
        if current.is_dir():
            current.rename(model_dir.parent / f".{self.model_name}-rolled-back-{version}")
        self._reload()
        remaining = sorted(int(p.name) for p in model_dir.glob("*") if p.name.isdigit())
        return f"Triton {self.model_name} version {remaining[-1] if remaining else 'none'}"

    def _reload(self) -> None:
        if self.triton_url:
            import tritonclient.grpc as triton

            triton.InferenceServerClient(self.triton_url).load_model(self.model_name)


@dataclass(frozen=True)
class Pending:
    snapshot: str | None
    new_labels: int
    age_s: float

    def due(self, settings: ControllerSettings) -> str | None:
        """Why a round should start now, or None."""
        if self.snapshot is None or self.new_labels <= 0:
            return None
        if self.new_labels >= settings.min_new_labels:
            return f"{self.new_labels} new labels >= {settings.min_new_labels}"
        if self.age_s >= settings.max_label_age_s:
            return (
                f"{self.new_labels} new labels waiting {self.age_s:.0f} s "
                f">= {settings.max_label_age_s:g} s"
            )
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _labels_count(snapshot: Snapshot) -> int:
    return int(snapshot.counts.get("labels", snapshot.labels(["query_id"]).num_rows))


class Controller:
    def __init__(
        self,
        settings: ControllerSettings,
        store: LabelStore,
        trainer: Trainer,
        promoter: Promoter,
        ledger: Ledger | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.trainer = trainer
        self.promoter = promoter
        self.ledger = ledger or Ledger(settings.ledger)
        self._lock = threading.Lock()  # one round at a time

    # -- when ------------------------------------------------------------------------------
    def pending(self, now: float | None = None) -> Pending:
        latest = self.store.latest_id()
        if latest is None:
            return Pending(None, 0, 0.0)
        trained = self.ledger.last_trained_snapshot()
        newest = self.store.open(latest)
        before = (
            _labels_count(self.store.open(trained)) if trained in self.store.snapshot_ids() else 0
        )
        untrained = [i for i in self.store.snapshot_ids() if trained is None or i > trained]
        age = 0.0
        if untrained:
            created = self.store.open(untrained[0]).created_at
            if created:
                age = (now or time.time()) - datetime.fromisoformat(created).timestamp()
        pending = Pending(latest, max(0, _labels_count(newest) - before), max(0.0, age))
        PENDING_LABELS.set(pending.new_labels)
        return pending

    # -- a round ---------------------------------------------------------------------------
    def run_round(self, snapshot_id: str | None = None, trigger: str = "on request") -> RoundRecord:
        with self._lock:
            began = time.monotonic()
            record = self._round(snapshot_id, trigger)
            ROUND_SECONDS.observe(time.monotonic() - began)
            ROUNDS.labels(str(record.decision)).inc()
            self.ledger.append(record)
            serving = self.ledger.serving()
            SERVING_ROUND.set(serving.round if serving else 0)
            log.info("round %d: %s (%s)", record.round, record.decision, record.reason)
            return record

    def _round(self, snapshot_id: str | None, trigger: str) -> RoundRecord:
        settings = self.settings
        number = self.ledger.next_round()
        started = _now()
        snapshot = self.store.open(snapshot_id)
        serving = self.ledger.serving()
        serving_checkpoint = (
            Path(serving.candidate_checkpoint)
            if serving and serving.candidate_checkpoint
            else settings.serving_checkpoint
        )
        record = RoundRecord(
            round=number,
            started_at=started,
            finished_at=started,
            snapshot=snapshot.id,
            decision=Decision.FAILED,
            reason="",
            serving_version=serving.candidate_version if serving else None,
            serving_checkpoint=str(serving_checkpoint) if serving_checkpoint else None,
            candidate_version=str(number),
        )
        round_dir = settings.work_dir / f"round-{number:04d}"
        round_dir.mkdir(parents=True, exist_ok=True)
        try:
            traffic = self._traffic_slice(snapshot, serving.snapshot if serving else None)
            dataset = self._round_dataset(round_dir, snapshot, traffic)
            config, train_queries = self._train_config(round_dir, dataset, snapshot, number)
            record.train_steps = config.max_steps
            record.label_counts = self._label_counts(snapshot, train_queries, len(traffic))
            checkpoint = self.trainer.train(round_dir, config)
            record.candidate_checkpoint = str(checkpoint)
            result = self._gate(
                round_dir, checkpoint, serving_checkpoint, serving, snapshot, traffic
            )
        except Exception as error:  # the round fails, the controller and the serving student stay
            log.exception("round %d failed", number)
            record.reason = f"{trigger}; failed: {type(error).__name__}: {error}"
            record.finished_at = _now()
            return record
        record.metrics = result.metrics
        record.candidate_p99_ms = result.candidate_p99_ms
        record.serving_p99_ms = result.serving_p99_ms
        for student in ("candidate", "serving"):
            if f"{student}.{gates.NDCG}" in result.metrics:
                GATE_NDCG.labels(student).set(result.metrics[f"{student}.{gates.NDCG}"].value)
        if result.promote:
            try:
                served = self.promoter.promote(round_dir / "export", number)
            except Exception as error:
                record.reason = (
                    f"{trigger}; gate passed ({result.reason}) but rollout failed: {error}"
                )
                record.finished_at = _now()
                return record
            record.decision = Decision.PROMOTED
            record.reason = f"{trigger}; promoted: {result.reason}; now serving {served}"
        else:
            record.decision = Decision.REFUSED
            record.reason = f"{trigger}; refused, serving student kept: {result.reason}"
        record.finished_at = _now()
        return record

    def _traffic_slice(self, snapshot: Snapshot, serving_snapshot: str | None) -> dict[str, str]:
        """The newest `gate_traffic_queries` teacher-labeled queries that the serving
        student's snapshot did not have and the human dataset does not judge."""
        seen: set[str] = set()
        if serving_snapshot and serving_snapshot in self.store.snapshot_ids():
            seen = set(self.store.open(serving_snapshot).known_queries())
        human = set(
            storage.read_table(self.settings.dataset_dir, "queries", ["query_id"])
            .column("query_id")
            .to_pylist()
        )
        labels = snapshot.labels(["query_id", "produced_at_ns"])
        newest = labels.group_by("query_id").aggregate([("produced_at_ns", "max")])
        order = pc.sort_indices(
            newest, [("produced_at_ns_max", "descending"), ("query_id", "ascending")]
        )
        known = snapshot.known_queries()
        slice_: dict[str, str] = {}
        for qid in newest.take(order).column("query_id").to_pylist():
            if len(slice_) >= self.settings.gate_traffic_queries:
                break
            if qid not in seen and qid not in human:
                slice_[qid] = known[qid]
        return slice_

    def _round_dataset(self, round_dir: Path, snapshot: Snapshot, traffic: dict[str, str]) -> Path:
        """The human dataset with the gate's traffic queries added as test queries, so
        the trainer drops their teacher labels (it never trains on dev or test queries)."""
        base = self.settings.dataset_dir
        dataset = round_dir / "dataset"
        dataset.mkdir(parents=True, exist_ok=True)
        for name in ("products", "judgments"):
            source = storage.table_path(base, name).resolve()
            link = dataset / source.name
            if not link.exists():
                link.symlink_to(source, target_is_directory=source.is_dir())
        storage.write_manifest(
            dataset, source=f"controller round dataset of {base}", extra={"snapshot": snapshot.id}
        )
        queries = storage.read_table(base, "queries").to_pylist()
        queries += [
            {"query_id": q, "query": text, "query_type": TRAFFIC_QUERY_TYPE, "split": Split.TEST}
            for q, text in traffic.items()
        ]
        storage.write_table(dataset, "queries", queries)
        return dataset

    @staticmethod
    def _round_label_store(round_dir: Path, snapshot: Snapshot) -> Path:
        """A copy of the snapshot in the round directory: the run reads only the round's
        directory (the data volume a training Job mounts) and stays reproducible."""
        store = round_dir / "label-store"
        target = store / SNAPSHOTS_DIR / snapshot.path.name
        if not target.is_dir():
            shutil.copytree(snapshot.path, target)
        return store

    def _train_config(
        self, round_dir: Path, dataset: Path, snapshot: Snapshot, number: int
    ) -> tuple[StudentTrainConfig, int]:
        settings = self.settings
        base: dict[str, object] = {}
        if settings.student_config is not None:
            base = yaml.safe_load(settings.student_config.read_text()) or {}
        base.update(
            dataset_dir=dataset,
            label_store=self._round_label_store(round_dir, snapshot),
            snapshot=snapshot.id,
            output_dir=round_dir / "candidate",
            name=settings.model_name,
            version=str(number),
            seed=settings.seed + number,
            progress=False,
            resume=False,
        )
        config = StudentTrainConfig.model_validate(base)
        split_of = {
            q["query_id"]: q["split"]
            for q in storage.read_table(dataset, "queries", ["query_id", "split"]).to_pylist()
        }
        human = {
            j
            for j in storage.read_table(dataset, "judgments", ["query_id"])
            .column("query_id")
            .to_pylist()
            if split_of.get(j) == Split.TRAIN
        }
        teacher = {
            q for q in snapshot.known_queries() if split_of.get(q) not in (Split.DEV, Split.TEST)
        }
        train_queries = len(human | teacher)
        steps = math.ceil(settings.epochs * train_queries / config.queries_per_batch)
        steps = min(settings.max_steps, max(settings.min_steps, steps))
        return config.model_copy(update={"max_steps": steps}), train_queries

    def _label_counts(
        self, snapshot: Snapshot, train_queries: int, gate_traffic: int
    ) -> dict[str, int]:
        counts = {f"teacher:{v}": n for v, n in sorted(snapshot.teacher_versions().items())}
        judgments = storage.read_table(
            self.settings.dataset_dir, "judgments", ["query_id"], Split.TRAIN
        )
        counts["human"] = judgments.num_rows
        counts["snapshot_labels"] = _labels_count(snapshot)
        previous = self.ledger.last_trained_snapshot()
        before = (
            _labels_count(self.store.open(previous))
            if previous and previous in self.store.snapshot_ids()
            else 0
        )
        counts["new_labels"] = max(0, counts["snapshot_labels"] - before)
        counts["train_queries"] = train_queries
        counts["gate_traffic_queries"] = gate_traffic
        return counts

    def _gate(
        self,
        round_dir: Path,
        checkpoint: Path,
        serving_checkpoint: Path | None,
        serving: RoundRecord | None,
        snapshot: Snapshot,
        traffic: dict[str, str],
    ) -> gates.GateResult:
        from training.export.exporter import export_student
        from training.student.checkpoint import load_student

        settings = self.settings
        export_dir = round_dir / "export"
        # The int8 export is always measured (its Spearman is recorded); held to its score
        # tolerance only when it is what serves: an fp32-served student does not depend
        # on it (a round of the loop demo failed on int8 drift 0.177 > 0.15 while fp32 served).
        export_student(
            checkpoint,
            export_dir,
            int8=True,
            int8_tolerance=None if settings.int8_serving else math.inf,
        )
        labels = snapshot.teacher_labels()
        labels = labels.filter(
            pc.is_in(labels.column("query_id"), pa.array(list(traffic), pa.string()))
        )
        gate = gates.build_gate_set(
            settings.dataset_dir,
            settings.gate_split,
            labels.to_pylist(),
            snapshot.product_rows(set(labels.column("product_id").to_pylist())),
        )
        rules = gates.GateRules(
            ndcg_tolerance=settings.ndcg_tolerance,
            p99_budget_ms=settings.p99_budget_ms,
            int8_serving=settings.int8_serving,
            int8_min_spearman=settings.int8_min_spearman,
            bootstrap_samples=settings.bootstrap_samples,
            confidence=settings.confidence,
            seed=settings.seed,
        )
        served_file = CROSS_ENCODER_INT8 if settings.int8_serving else CROSS_ENCODER_ONNX
        candidate_run = gates.score_run(load_student(checkpoint, device="cpu"), gate)
        candidate_p99 = gates.measure_p99_ms(
            gates.OnnxScorer(export_dir, served_file),
            gate,
            settings.latency_pairs_per_request,
            settings.latency_requests,
        )
        serving_run = serving_p99 = None
        if serving_checkpoint is not None:
            serving_run = gates.score_run(load_student(serving_checkpoint, device="cpu"), gate)
            serving_export = (
                Path(serving.candidate_checkpoint).parent / "export"
                if serving and serving.candidate_checkpoint
                else None
            )
            if serving_export is not None and (serving_export / served_file).is_file():
                serving_p99 = gates.measure_p99_ms(
                    gates.OnnxScorer(serving_export, served_file),
                    gate,
                    settings.latency_pairs_per_request,
                    settings.latency_requests,
                )
        spearman = gates.int8_spearman(export_dir, gate)
        result = gates.judge(
            gate, rules, candidate_run, candidate_p99, serving_run, serving_p99, spearman
        )
        for name, value in gate.counts().items():
            result.metrics[name] = Metric(float(value))
        return result

    # -- rollback --------------------------------------------------------------------------
    def check_rollback(self, disagreement_rate: float) -> RoundRecord | None:
        """Roll the serving student back when its live disagreement rate is too high."""
        DISAGREEMENT.set(disagreement_rate)
        with self._lock:
            serving = self.ledger.serving()
            threshold = self.settings.rollback_disagreement_rate
            if serving is None or disagreement_rate <= threshold:
                return None
            # One rollback per promotion: the student that serves again after a rollback
            # was measured before; the rate read next may still be the rolled-back one's.
            promoted = [r.round for r in self.ledger.rounds() if r.decision == Decision.PROMOTED]
            if serving.round != promoted[-1]:
                return None
            served = self.promoter.rollback(int(serving.round))
            started = _now()
            record = RoundRecord(
                round=self.ledger.next_round(),
                started_at=started,
                finished_at=started,
                snapshot=serving.snapshot,
                decision=Decision.ROLLED_BACK,
                reason=(
                    f"live disagreement rate {disagreement_rate:.3f} > {threshold} for "
                    f"round {serving.round}'s student; now serving {served}"
                ),
                metrics={"live.disagreement_rate": Metric(disagreement_rate)},
                candidate_version=serving.candidate_version,
                serving_version=serving.candidate_version,
            )
            self.ledger.append(record)
            after = self.ledger.serving()
            SERVING_ROUND.set(after.round if after else 0)
            ROUNDS.labels(str(Decision.ROLLED_BACK)).inc()
            log.warning("round %d: %s", record.round, record.reason)
            return record

    # -- the loop --------------------------------------------------------------------------
    def _backing_off(self) -> bool:
        """Whether the last round failed less than ``failed_round_retry_s`` ago."""
        rounds = self.ledger.rounds()
        if not rounds or rounds[-1].decision != Decision.FAILED:
            return False
        finished = datetime.fromisoformat(rounds[-1].finished_at).timestamp()
        return time.time() - finished < self.settings.failed_round_retry_s

    def serve(
        self,
        stop: threading.Event,
        disagreement_rate: Callable[[], float | None] | None = None,
    ) -> None:
        """Check the thresholds (and the live disagreement rate) every check interval
        until `stop` is set; a round runs to completion once started."""
        while not stop.is_set():
            try:
                if disagreement_rate is not None:
                    rate = disagreement_rate()
                    if rate is not None:
                        self.check_rollback(rate)
                pending = self.pending()
                reason = pending.due(self.settings) if not self._backing_off() else None
                if reason:
                    self.run_round(pending.snapshot, trigger=reason)
            except Exception:  # a failed check is retried at the next interval
                log.exception(
                    "controller check failed; retrying in %.0f s", self.settings.check_interval_s
                )
            stop.wait(self.settings.check_interval_s)
