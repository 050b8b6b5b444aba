"""The student trainer reproduces a recorded tiny run exactly (up to float noise).

The numbers below were recorded at commit 93b7d93, before the trainers moved onto the
shared training loop (training/loop.py); the cross-encoder's were re-recorded when its
head gained the free score logit (issue 18), which changes its initialisation and its
Margin-MSE gradient; both were re-recorded when the fixture's teacher labels got the
rationale distributions the pipeline produces (soft, or missing on one query) and the
CoT loss became a masked KL to them (issue 18: step 1's other losses are unchanged,
only ``cot`` and what follows from its gradient moved); the cross-encoder's once more
when its free score logit kept random initial weights instead of a zero row (issue 18:
Margin-MSE alone then matches sentence-transformers). A refactor of the loop must not change a
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
        "1.loss": 3.9470395892858505,
        "1.margin_mse": 3.3342013359069824,
        "1.mse": 0.11124475300312042,
        "1.kl": 0.3957296907901764,
        "1.cot": 0.10586380958557129,
        "1.lr": 0.0008333333333333334,
        "2.step": 2.0,
        "2.loss": 4.380823157727718,
        "2.margin_mse": 3.758756399154663,
        "2.mse": 0.11468330770730972,
        "2.kl": 0.39303842186927795,
        "2.cot": 0.11434502899646759,
        "2.lr": 0.0006666666666666666,
        "3.step": 3.0,
        "3.loss": 3.9045681059360504,
        "3.margin_mse": 3.3239994049072266,
        "3.mse": 0.11073429882526398,
        "3.kl": 0.3913884162902832,
        "3.cot": 0.07844598591327667,
        "3.lr": 0.0005,
        "3.dev_ndcg10": 0.3646326974202273,
        "4.step": 4.0,
        "4.loss": 3.359348952770233,
        "4.margin_mse": 2.767069101333618,
        "4.mse": 0.10470408201217651,
        "4.kl": 0.3891685903072357,
        "4.cot": 0.09840717911720276,
        "4.lr": 0.0003333333333333333,
        "5.step": 5.0,
        "5.loss": 4.336433224380016,
        "5.margin_mse": 3.7506847381591797,
        "5.mse": 0.10897982120513916,
        "5.kl": 0.38869109749794006,
        "5.cot": 0.08807756751775742,
        "5.lr": 0.00016666666666666666,
        "6.step": 6.0,
        "6.loss": 3.718490369617939,
        "6.margin_mse": 3.1574454307556152,
        "6.mse": 0.10797937214374542,
        "6.kl": 0.3860871195793152,
        "6.cot": 0.06697844713926315,
        "6.lr": 0.0,
        "6.dev_ndcg10": 0.4133488210770086,
        "steps": 6,
        "best_step": 6,
        "best_dev_ndcg10": 0.4133488210770086,
    },
    "two-tower": {
        "1.step": 1.0,
        "1.loss": 4.211902663111687,
        "1.margin_mse": 2.8399094343185425,
        "1.mse": 0.30663713812828064,
        "1.kl": 0.968175619840622,
        "1.cot": 0.09718047082424164,
        "1.lr": 0.0008333333333333334,
        "2.step": 2.0,
        "2.loss": 4.172294370830059,
        "2.margin_mse": 2.7748935222625732,
        "2.mse": 0.31479015946388245,
        "2.kl": 0.9927115738391876,
        "2.cot": 0.08989911526441574,
        "2.lr": 0.0006666666666666666,
        "2.dev_ndcg10": 0.7668434774192274,
        "3.step": 3.0,
        "3.loss": 4.337064940482378,
        "3.margin_mse": 3.0036158561706543,
        "3.mse": 0.2978638857603073,
        "3.kl": 0.9534401297569275,
        "3.cot": 0.0821450687944889,
        "3.lr": 0.0005,
        "4.step": 4.0,
        "4.loss": 3.796697773039341,
        "4.margin_mse": 2.625197649002075,
        "4.mse": 0.24644555896520615,
        "4.kl": 0.8369418382644653,
        "4.cot": 0.0881127268075943,
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
