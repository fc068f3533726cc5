"""The hybrid loss (eq. 21-24): its parts, the REINFORCE sign, the reward, bad labels, one training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from gdram import GDRAM, GDRAMConfig, GlimpseResult, LossParts, create_model, hybrid_loss
from tiny import SMALL

TINY = {**SMALL, "num_classes": 3, "num_glimpses": 2}


def constructed_result(
    logits: torch.Tensor, log_probs: torch.Tensor, baselines: torch.Tensor, glimpses_used: torch.Tensor | None = None
) -> GlimpseResult:
    """A result of T = log_probs.shape[0] steps whose every step predicts ``logits``."""
    steps, batch = log_probs.shape
    return GlimpseResult(
        logits=logits,
        step_logits=logits.expand(steps, *logits.shape),
        locations=torch.zeros(steps, batch, 2),
        log_probs=log_probs,
        baselines=baselines,
        weights=torch.ones(steps, batch),
        sigmas=torch.ones(steps, batch, 2),
        glimpses_used=torch.full((batch,), steps) if glimpses_used is None else glimpses_used,
        mean_locations=torch.zeros(steps, batch, 2),
    )


def test_loss_parts_are_scalars_whose_weighted_sum_is_the_total() -> None:
    model = GDRAM(GDRAMConfig(**TINY))
    result = model(torch.rand(4, 3, 32, 32))
    labels = torch.tensor([0, 1, 2, 1])
    parts = hybrid_loss(result, labels, baseline_weight=0.5, reinforce_weight=2.0)
    assert isinstance(parts, LossParts)
    assert all(part.shape == () for part in parts)
    torch.testing.assert_close(parts.total, parts.classification + 0.5 * parts.baseline + 2.0 * parts.reinforce)
    torch.testing.assert_close(parts.classification, F.cross_entropy(result.logits, labels))


def test_reinforce_raises_the_log_probability_of_rewarded_moves() -> None:
    logits = torch.tensor([[5.0, 0.0], [5.0, 0.0]])  # both predict class 0
    labels = torch.tensor([0, 1])  # sample 0 is rewarded, sample 1 is not
    log_probs = torch.full((2, 2), -1.0, requires_grad=True)
    baselines = torch.full((2, 2), 0.4)
    parts = hybrid_loss(constructed_result(logits, log_probs, baselines), labels)
    (grad,) = torch.autograd.grad(parts.reinforce, log_probs)
    # d/d log_prob of -mean_b sum_t log_prob * (r - b): -(r - b) / B
    torch.testing.assert_close(grad, torch.tensor([[-0.3, 0.2], [-0.3, 0.2]]))
    # so a gradient-descent step raises the rewarded sample's log-probabilities and lowers the other's
    stepped = log_probs - 0.1 * grad
    assert (stepped[:, 0] > log_probs[:, 0]).all() and (stepped[:, 1] < log_probs[:, 1]).all()
    torch.testing.assert_close(parts.reinforce, torch.tensor(0.2))  # -mean([2 * -1 * 0.6, 2 * -1 * -0.4])


def test_reward_is_whether_the_final_weighted_prediction_is_right() -> None:
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1, 1])
    baselines = torch.full((3, 3), 0.25, requires_grad=True)
    parts = hybrid_loss(constructed_result(logits, torch.zeros(3, 3), baselines), labels)
    reward = torch.tensor([1.0, 0.0, 1.0])
    torch.testing.assert_close(parts.baseline, ((0.25 - reward) ** 2).mean())
    (grad,) = torch.autograd.grad(parts.baseline, baselines)
    assert (grad[:, [0, 2]] < 0).all() and (grad[:, 1] > 0).all()  # the baseline moves towards the reward


def test_baselines_do_not_receive_the_reinforce_gradient() -> None:
    baselines = torch.full((2, 1), 0.5, requires_grad=True)
    log_probs = torch.zeros(2, 1, requires_grad=True)
    parts = hybrid_loss(constructed_result(torch.tensor([[1.0, 0.0]]), log_probs, baselines), torch.tensor([0]))
    grad_baselines, grad_log_probs = torch.autograd.grad(parts.reinforce, (baselines, log_probs), allow_unused=True)
    assert grad_baselines is None and grad_log_probs is not None


def test_steps_a_sample_did_not_use_are_left_out() -> None:
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0])
    log_probs = torch.tensor([[-1.0, -1.0], [-1.0, -5.0], [-1.0, -7.0]])
    baselines = torch.tensor([[0.5, 0.5], [0.5, 0.0], [0.5, 0.0]])
    used = torch.tensor([3, 1])
    parts = hybrid_loss(constructed_result(logits, log_probs, baselines, used), labels)
    torch.testing.assert_close(parts.reinforce, torch.tensor((3 * 0.5 + 0.5) / 2))
    torch.testing.assert_close(parts.baseline, torch.tensor(0.25))


def test_cnn_baseline_loss_is_the_cross_entropy() -> None:
    model = create_model(GDRAMConfig(**TINY, variant="cnn"))
    result = model(torch.rand(4, 3, 32, 32))
    labels = torch.tensor([0, 1, 2, 1])
    parts = hybrid_loss(result, labels)
    torch.testing.assert_close(parts.total, F.cross_entropy(result.logits, labels))
    assert parts.baseline == 0 and parts.reinforce == 0


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (torch.tensor([0, 3]), ValueError, r"\[0, 3\).*\[3\]"),
        (torch.tensor([-1, 0]), ValueError, r"\[0, 3\)"),
        (torch.tensor([0, 1, 2]), ValueError, "shape"),
        (torch.tensor([0.0, 1.0]), TypeError, "integer"),
        ([0, 1], TypeError, "torch.Tensor"),
    ],
)
def test_bad_labels_raise_naming_the_problem(labels: object, error: type, message: str) -> None:
    result = constructed_result(torch.zeros(2, 3), torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(error, match=message):
        hybrid_loss(result, labels)


@pytest.mark.parametrize("variant", ["gdram", "ram", "cnn"])
def test_one_optimisation_step_lowers_the_loss(variant: str) -> None:
    model = create_model(GDRAMConfig(**TINY, variant=variant))
    images = torch.rand(8, 3, 32, 32)
    labels = torch.arange(8) % 3
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same sampled moves before and after the step
        return hybrid_loss(model(images), labels).total

    before = loss()
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = loss()
    assert after < before
