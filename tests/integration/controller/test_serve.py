"""`Controller.serve`: the label thresholds start a round by themselves, a failed round
is retried only after the back-off, and setting the stop event ends the loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from loop_fixtures import NEW_BRANDS, add_traffic_labels

from services.controller.controller import Controller, TrainingFailed, TritonPromoter
from services.controller.ledger import Decision
from services.controller.settings import ControllerSettings
from services.label_store.store import LabelStore
from training.student.config import StudentTrainConfig

pytestmark = pytest.mark.integration


class BrokenTrainer:
    """A trainer whose runs all fail (a cluster whose Jobs cannot start)."""

    def __init__(self) -> None:
        self.calls = 0

    def train(self, round_dir: Path, config: StudentTrainConfig) -> Path:
        self.calls += 1
        raise TrainingFailed("Job relevance-kd/x failed")


def _serve(controller: Controller, until: callable, timeout_s: float = 30) -> None:
    stop = threading.Event()
    loop = threading.Thread(target=controller.serve, args=(stop,))
    loop.start()
    deadline = time.monotonic() + timeout_s
    while not until() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    loop.join(timeout=10)
    assert not loop.is_alive(), "serve did not stop"


@pytest.mark.parametrize("retry_s", [3600.0, 0.0])
def test_thresholds_start_rounds_and_failures_back_off(
    human_dataset: Path, tmp_path: Path, retry_s: float
) -> None:
    store = tmp_path / "store"
    add_traffic_labels(store, NEW_BRANDS[:1], first_query=0, at_ns=1_000)
    settings = ControllerSettings(
        work_dir=tmp_path / "controller",
        ledger=tmp_path / "ledger.sqlite",
        dataset_dir=human_dataset,
        min_new_labels=50,
        check_interval_s=0.05,
        failed_round_retry_s=retry_s,
        triton_repository=tmp_path / "triton",
    )
    trainer = BrokenTrainer()
    controller = Controller(
        settings, LabelStore(store), trainer, TritonPromoter(tmp_path / "triton", "s", False)
    )
    _serve(controller, until=lambda: trainer.calls >= 2, timeout_s=3 if retry_s else 30)
    rounds = controller.ledger.rounds()
    assert rounds and all(r.decision == Decision.FAILED for r in rounds)
    assert rounds[0].reason.startswith(f"{rounds[0].label_counts['new_labels']} new labels >= 50")
    assert "Job relevance-kd/x failed" in rounds[0].reason
    # Backing off: one attempt in 3 s; without a back-off the labels are retried at once.
    assert (trainer.calls == 1) if retry_s else (trainer.calls >= 2)
    assert controller.ledger.serving() is None
