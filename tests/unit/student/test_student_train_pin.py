"""The student trainer reproduces a recorded tiny run exactly (up to float noise).

The numbers below were recorded at commit 93b7d93, before the trainers moved onto the
shared training loop (training/loop.py): a refactor of the loop must not change a
single batch, dropout mask, optimizer step or evaluation. Re-record them only for a
change that is meant to change training, and say so in its commit
(``RELKD_PRINT_PIN=1 pytest -s`` prints the new numbers).
"""

from __future__ import annotations

import csv
import os

import pytest
import torch

from training.student.config import StudentKind, StudentTrainConfig
from training.student.train import METRICS_CSV, train

# Float noise only: a different batch, dropout mask or learning rate moves these by
# orders of magnitude more.
REL = 1e-5
LOGGED = ("step", "loss", "margin_mse", "mse", "kl", "cot", "lr", "dev_ndcg10")

PINNED: dict[str, dict[str, float]] = {
    "cross-encoder": {
        "1.step": 1.0,
        "1.loss": 3.9888188391923904,
        "1.margin_mse": 3.3192789554595947,
        "1.mse": 0.11096978187561035,
        "1.kl": 0.3946743905544281,
        "1.cot": 0.16389571130275726,
        "1.lr": 0.0008333333333333334,
        "2.step": 2.0,
        "2.loss": 4.42236552387476,
        "2.margin_mse": 3.7649476528167725,
        "2.mse": 0.11489485949277878,
        "2.kl": 0.3927997946739197,
        "2.cot": 0.14972321689128876,
        "2.lr": 0.0006666666666666666,
        "3.step": 3.0,
        "3.loss": 3.9675633683800697,
        "3.margin_mse": 3.318720579147339,
        "3.mse": 0.1105942651629448,
        "3.kl": 0.3919769525527954,
        "3.cot": 0.14627157151699066,
        "3.lr": 0.0005,
        "3.dev_ndcg10": 0.19052812648031817,
        "4.step": 4.0,
        "4.loss": 3.3945747762918472,
        "4.margin_mse": 2.763211965560913,
        "4.mse": 0.10447849333286285,
        "4.kl": 0.3896917402744293,
        "4.cot": 0.13719257712364197,
        "4.lr": 0.0003333333333333333,
        "5.step": 5.0,
        "5.loss": 4.383183792233467,
        "5.margin_mse": 3.7546257972717285,
        "5.mse": 0.10909837484359741,
        "5.kl": 0.3904096484184265,
        "5.cot": 0.12904997169971466,
        "5.lr": 0.00016666666666666666,
        "6.step": 6.0,
        "6.loss": 3.7812009528279305,
        "6.margin_mse": 3.1573147773742676,
        "6.mse": 0.10831854492425919,
        "6.kl": 0.38832780718803406,
        "6.cot": 0.12723982334136963,
        "6.lr": 0.0,
        "6.dev_ndcg10": 0.1908876823682966,
        "steps": 6,
        "best_step": 6,
        "best_dev_ndcg10": 0.1908876823682966,
    },
    "two-tower": {
        "1.step": 1.0,
        "1.loss": 4.221114665269852,
        "1.margin_mse": 2.8399094343185425,
        "1.mse": 0.30663713812828064,
        "1.kl": 0.968175619840622,
        "1.cot": 0.10639247298240662,
        "1.lr": 0.0008333333333333334,
        "2.step": 2.0,
        "2.loss": 4.188279069960117,
        "2.margin_mse": 2.7749030590057373,
        "2.mse": 0.3147919774055481,
        "2.kl": 0.9927153885364532,
        "2.cot": 0.10586864501237869,
        "2.lr": 0.0006666666666666666,
        "2.dev_ndcg10": 0.7668434774192274,
        "3.step": 3.0,
        "3.loss": 4.360244207084179,
        "3.margin_mse": 3.0036243200302124,
        "3.mse": 0.29786647856235504,
        "3.kl": 0.9534454345703125,
        "3.cot": 0.10530797392129898,
        "3.lr": 0.0005,
        "4.step": 4.0,
        "4.loss": 3.813224233686924,
        "4.margin_mse": 2.625187635421753,
        "4.mse": 0.24644915014505386,
        "4.kl": 0.8369491994380951,
        "4.cot": 0.1046382486820221,
        "4.lr": 0.0003333333333333333,
        "4.dev_ndcg10": 0.7657065058476897,
        "steps": 4,
        "best_step": 2,
        "best_dev_ndcg10": 0.7668434774192274,
    },
}


def _fingerprint(config: StudentTrainConfig) -> dict[str, float]:
    """Every logged number of every step (timings aside) and the run's result, flat."""
    result = train(config)
    with (config.output_dir / METRICS_CSV).open() as f:
        rows = list(csv.DictReader(f))
    logged = {f"{row['step']}.{k}": float(row[k]) for row in rows for k in LOGGED if row[k]}
    return {
        **logged,
        "steps": result.steps,
        "best_step": result.best_step,
        "best_dev_ndcg10": result.best_dev_ndcg10,
    }


# The two-tower run also accumulates gradients and evaluates often enough to stop early.
RUNS = {
    "cross-encoder": {},
    "two-tower": {"grad_accum": 2, "eval_every": 2, "patience": 1},
}


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_student_training_matches_the_pinned_run(tiny_config: StudentTrainConfig, kind: str):
    # Single-threaded: reductions then add in one order whatever the machine's cores.
    update = {"kind": StudentKind(kind), "torch_threads": 1, **RUNS[kind]}
    config = tiny_config.model_copy(update=update)
    threads = torch.get_num_threads()
    try:
        got = _fingerprint(config)
    finally:
        torch.set_num_threads(threads)
    if os.environ.get("RELKD_PRINT_PIN"):
        print(f"PIN {kind} {got!r}")
    assert got == pytest.approx(PINNED[kind], rel=REL)
