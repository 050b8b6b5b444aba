from __future__ import annotations

import pytest
import torch

from training.student.config import LossWeights
from training.student.losses import (
    GradeKLLoss,
    MarginMSELoss,
    PointwiseMSELoss,
    RationaleLoss,
    Targets,
    build_loss,
)
from training.student.models import StudentOutput


def _targets(scores: list[float], pairs: list[list[int]]) -> Targets:
    n = len(scores)
    return Targets(
        scores=torch.tensor(scores),
        grade_probs=torch.full((n, 4), 0.25),
        rationale=torch.nn.functional.one_hot(torch.zeros(n, 3, dtype=torch.long), 3).float(),
        rationale_known=torch.ones(n, 3, dtype=torch.bool),
        pairs=torch.tensor(pairs),
    )


def _output(scores: list[float], grade_logits: torch.Tensor | None = None) -> StudentOutput:
    n = len(scores)
    return StudentOutput(
        scores=torch.tensor(scores),
        grade_logits=torch.zeros(n, 4) if grade_logits is None else grade_logits,
        rationale_logits=torch.zeros(n, 3, 3),
    )


def test_margin_mse_ignores_offset_but_not_margin():
    targets = _targets([3.0, 1.0, 0.0], [[0, 1], [0, 2]])
    shifted = _output([13.0, 11.0, 10.0])  # same margins, different calibration
    assert MarginMSELoss()(shifted, targets).item() == pytest.approx(0.0)
    # Margins (1, 1) against targets (2, 3): ((1-2)^2 + (1-3)^2) / 2.
    assert MarginMSELoss()(_output([1.0, 0.0, 0.0]), targets).item() == pytest.approx(2.5)
    assert PointwiseMSELoss()(shifted, targets).item() == pytest.approx(100.0)


def test_kl_is_zero_only_at_the_target_distribution():
    targets = _targets([1.5, 1.5], [[0, 1]])
    uniform = _output([0.0, 0.0], torch.zeros(2, 4))
    peaked = _output([0.0, 0.0], torch.tensor([[5.0, 0, 0, 0], [5.0, 0, 0, 0]]))
    assert GradeKLLoss()(uniform, targets).item() == pytest.approx(0.0, abs=1e-6)
    assert GradeKLLoss()(peaked, targets).item() > 0.5


def test_kl_without_grade_head_names_the_weight():
    output = StudentOutput(torch.zeros(2), None, torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"loss_weights\.kl"):
        GradeKLLoss()(output, _targets([0.0, 1.0], [[1, 0]]))


def test_rationale_loss_rewards_the_right_class():
    targets = _targets([0.0], [[0, 0]])
    right = torch.zeros(1, 3, 3)
    right[..., 0] = 10.0  # targets are class 0 (NOT_STATED) for every field
    wrong = torch.zeros(1, 3, 3)
    wrong[..., 1] = 10.0
    loss = RationaleLoss()
    assert loss(StudentOutput(torch.zeros(1), None, right), targets).item() < 1e-3
    assert loss(StudentOutput(torch.zeros(1), None, wrong), targets).item() > 5


def _rationale_targets(probs: torch.Tensor, known: torch.Tensor) -> Targets:
    n = probs.shape[0]
    return Targets(
        scores=torch.zeros(n),
        grade_probs=torch.full((n, 4), 0.25),
        rationale=probs,
        rationale_known=known,
        pairs=torch.zeros(0, 2, dtype=torch.long),
    )


def test_rationale_loss_is_the_kl_to_soft_targets():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0]]])
    logits = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.5]]])
    loss = RationaleLoss()(
        StudentOutput(torch.zeros(1), None, logits),
        _rationale_targets(probs, torch.ones(1, 3, dtype=torch.bool)),
    )
    q = logits.softmax(-1)
    expected = (probs * (probs.clamp_min(1e-30).log() - q.log())).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # At the target distribution it is zero; for one-hot targets it is the cross-entropy.
    at_target = RationaleLoss()(
        StudentOutput(torch.zeros(1), None, probs.clamp_min(1e-12).log()),
        _rationale_targets(probs, torch.ones(1, 3, dtype=torch.bool)),
    )
    assert at_target.item() == pytest.approx(0.0, abs=1e-6)
    hard = torch.nn.functional.one_hot(torch.tensor([[1, 2, 0]]), 3).float()
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([1, 2, 0]))
    one_hot_loss = RationaleLoss()(
        StudentOutput(torch.zeros(1), None, logits),
        _rationale_targets(hard, torch.ones(1, 3, dtype=torch.bool)),
    )
    assert one_hot_loss.item() == pytest.approx(ce.item(), rel=1e-6)


def test_a_masked_rationale_target_contributes_no_gradient():
    probs = torch.tensor([[[0.1, 0.8, 0.1]] * 3, [[1.0, 0.0, 0.0]] * 3])
    known = torch.tensor([[True, False, True], [False, False, False]])
    logits = torch.randn(2, 3, 3, requires_grad=True)
    loss = RationaleLoss()(
        StudentOutput(torch.zeros(2), None, logits), _rationale_targets(probs, known)
    )
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[~known].abs().sum().item() == 0.0
    assert (logits.grad[known].abs().sum(-1) > 0).all()
    # The mean runs over the known fields only: the same as a batch of just those.
    alone = RationaleLoss()(
        StudentOutput(torch.zeros(1), None, logits[:1, [0, 2]].detach()),
        _rationale_targets(probs[:1, [0, 2]], torch.ones(1, 2, dtype=torch.bool)),
    )
    assert loss.item() == pytest.approx(alone.item(), rel=1e-6)
    # Nothing known: zero, still differentiable.
    none = RationaleLoss()(
        StudentOutput(torch.zeros(2), None, logits),
        _rationale_targets(probs, torch.zeros(2, 3, dtype=torch.bool)),
    )
    assert none.item() == 0.0 and none.requires_grad


def test_combined_weights_and_disabled_losses():
    combined = build_loss(LossWeights(margin_mse=2.0, mse=0.0, kl=0.0, cot=0.0))
    targets = _targets([3.0, 1.0, 0.0], [[0, 1], [0, 2]])
    total, parts = combined(_output([1.0, 0.0, 0.0]), targets)
    assert set(parts) == {"margin_mse"}
    assert total.item() == pytest.approx(5.0)


def test_all_zero_weights_rejected():
    with pytest.raises(ValueError, match="loss_weights"):
        LossWeights(margin_mse=0, mse=0, kl=0, cot=0)
