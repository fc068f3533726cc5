"""The hybrid loss of Gaussian RAM (eq. 21-24): classification + baseline regression + REINFORCE."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from gdram.models.config import REWARDS
from gdram.models.gdram import GlimpseResult
from gdram.training.attention import box_centres

# normalize_advantage divides by at least this: rewards lie in [0, 1], and a batch whose rewards
# barely differ (all right, late in training) must not have its noise blown up to unit size.
ADVANTAGE_SPREAD_FLOOR = 0.05


class LossParts(NamedTuple):
    """Scalar tensors: ``total`` = ``classification`` + a * ``baseline`` + c * ``reinforce``."""

    total: torch.Tensor
    classification: torch.Tensor
    baseline: torch.Tensor
    reinforce: torch.Tensor


def hybrid_loss(
    result: GlimpseResult,
    labels: torch.Tensor,
    *,
    baseline_weight: float = 1.0,
    reinforce_weight: float = 1.0,
    reward: str = "final",
    normalize_advantage: bool = False,
    episodes_per_image: int = 1,
) -> LossParts:
    """The paper's hybrid loss from a forward's result and the (B,) int64 class labels.

    * classification: cross-entropy of the final, weighted prediction ``result.logits`` (eq. 16);
    * reward r_t of the move placing glimpse t: with ``reward="final"`` (the paper), 1 if the
      final prediction's arg-max is the label, else 0 (computed on the weighted prediction as in
      the published implementation), the same for every step of a sample (no discount); with
      ``reward="steps"``, the share of the step predictions t, t+1, ... (eq. 10) that are right
      (a per-step reward-to-go: a move is credited with what the glimpses from it on read); with
      ``reward="probs"``, the mean probability the step predictions t, t+1, ... give the label
      (the same, graded: it rises before the arg-max turns right); with ``reward="gain"``, the rise
      of the label's probability from step prediction t - 1 to t (from 1 / K before the first),
      what glimpse t alone adds, without the later moves' credit;
    * baseline: mean over steps and samples of (b_t - r_t)^2 (eq. 21);
    * reinforce: mean over samples of -sum_t log pi(move placing glimpse t) * A_t with the
      advantage A_t = r_t - b_t, b_t detached (eq. 22-24), so that gradient descent raises the
      log-probability of moves whose reward beats the baseline. ``normalize_advantage`` divides
      A_t by its standard deviation over the batch's used samples at step t (at least
      :data:`ADVANTAGE_SPREAD_FLOOR`). With
      ``episodes_per_image`` K > 1 the batch holds K consecutive episodes of each image and b_t
      is the mean reward of the image's other K - 1 episodes (a leave-one-out baseline: the
      advantage says which glimpses were better *on this image*); the baseline network is
      still fitted, but not used.

    Steps a sample did not use (F-GDRAM, ``t >= glimpses_used``) are left out. For a result with
    no moves (``CNNBaseline``: ``log_probs`` of shape (0, B)) the policy terms are 0 and
    ``total`` is the cross-entropy. No host-device synchronisation on accelerators: there the
    label range is checked with an asynchronous device assertion.
    """
    logits = result.logits
    _check_labels(labels, logits)
    labels = labels.long()
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(map(repr, REWARDS))}, got {reward!r}")
    if episodes_per_image < 1 or logits.shape[0] % episodes_per_image:
        raise ValueError(
            f"episodes_per_image must be >= 1 and divide the batch ({logits.shape[0]}), got {episodes_per_image}"
        )
    classification = F.cross_entropy(logits, labels)
    steps = result.log_probs.shape[0]
    used = torch.arange(steps, device=logits.device)[:, None] < result.glimpses_used[None, :]  # (T, B)
    mask = used.to(logits.dtype)
    rewards = move_rewards(result, labels, reward, mask)
    baseline = (mask * (result.baselines - rewards) ** 2).sum() / mask.sum().clamp(min=1.0)
    if episodes_per_image > 1 and steps:
        grouped = rewards.expand(steps, -1).reshape(steps, -1, episodes_per_image)  # (T, B / K, K)
        others = (grouped.sum(dim=2, keepdim=True) - grouped) / (episodes_per_image - 1)
        advantage = (grouped - others).reshape(steps, -1)
    else:
        advantage = rewards - result.baselines.detach()  # (T, B)
    if normalize_advantage and steps:
        count = mask.sum(dim=1, keepdim=True).clamp(min=2.0)
        centred = (advantage - (mask * advantage).sum(dim=1, keepdim=True) / count) * mask
        spread = ((centred**2).sum(dim=1, keepdim=True) / (count - 1)).sqrt()
        advantage = advantage / spread.clamp(min=ADVANTAGE_SPREAD_FLOOR)
    reinforce = -(mask * result.log_probs * advantage).sum(dim=0).mean()
    total = classification + baseline_weight * baseline + reinforce_weight * reinforce
    return LossParts(total=total, classification=classification, baseline=baseline, reinforce=reinforce)


def move_rewards(result: GlimpseResult, labels: torch.Tensor, reward: str, mask: torch.Tensor) -> torch.Tensor:
    """The reward r_t of the move placing glimpse t (see :func:`hybrid_loss`), without gradient.

    ``labels`` (B,) int64; ``mask`` (T, B): 1 for the steps a sample used. Returns (B,) for
    ``"final"`` (every move of a sample earns the same) or a result without moves, else (T, B):
    the mean over the used steps t, t+1, ... of each step prediction's credit (right or not for
    ``"steps"``, the label's probability for ``"probs"``), or for ``"gain"`` the rise of the
    label's probability at step t alone (0 on unused steps).
    """
    logits = result.logits
    steps = result.log_probs.shape[0]
    if reward == "final" or steps == 0:
        return (logits.detach().argmax(dim=1) == labels).to(logits.dtype)
    step_logits = result.step_logits.detach()
    if reward == "steps":
        credit = (step_logits.argmax(dim=2) == labels).to(logits.dtype)  # (T, B)
    else:
        credit = step_logits.float().softmax(dim=2).gather(2, labels.expand(steps, -1)[..., None])[..., 0]
    if reward == "gain":
        before = torch.cat((credit.new_full((1, credit.shape[1]), 1.0 / logits.shape[1]), credit[:-1]))
        return ((credit - before) * mask.float()).to(logits.dtype)
    credit = credit.to(logits.dtype) * mask
    return credit.flip(0).cumsum(0).flip(0) / (mask.flip(0).cumsum(0).flip(0)).clamp(min=1.0)


def _check_labels(labels: torch.Tensor, logits: torch.Tensor) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if labels.device != logits.device:
        raise ValueError(f"labels are on {labels.device} but the result is on {logits.device}")
    num_classes = logits.shape[1]
    in_range = (labels >= 0) & (labels < num_classes)
    message = f"labels must lie in [0, {num_classes})"
    if labels.device.type == "cpu" and not torch.compiler.is_compiling():
        if not bool(in_range.all()):
            raise ValueError(f"{message}, got {labels[~in_range].tolist()}")
    else:
        torch._assert_async(in_range.all(), message)


def guidance_loss(result: GlimpseResult, boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Location guidance (LG-DRAM): how far the policy's mean glimpses are from the target.

    Mean over the glimpses of the samples whose box is known (a finite row of ``boxes``, (B, 4)
    x0, y0, x1, y1 in pixels) of the squared distance, in [-1, 1] image coordinates, between
    ``result.mean_locations`` and the box centre; 0 (with a zero gradient) when no sample has a
    box. Its gradient reaches the emission network's mu head and what feeds it.
    """
    known = torch.isfinite(boxes).all(dim=1)  # (B,)
    centre = torch.where(known[:, None], box_centres(boxes, image_hw), torch.zeros_like(boxes[:, :2]))
    squared = ((result.mean_locations - centre.to(result.mean_locations)) ** 2).sum(dim=2)  # (T, B)
    weight = known.to(squared.dtype).expand_as(squared)
    return (weight * squared).sum() / weight.sum().clamp(min=1.0)


def border_loss(result: GlimpseResult, bound: torch.Tensor) -> torch.Tensor:
    """Mean over glimpses and samples of the squared distance by which the policy's mean glimpse
    (``result.mean_locations``, (T, B, 2)) lies beyond the location clip ``bound`` (2,).

    The clip makes everything beyond the border one place: the reward's gradient is zero there, so
    a mean that drifts out never comes back. This gives it a way back; 0 inside the image.
    """
    beyond = (result.mean_locations.abs() - bound.to(result.mean_locations)).clamp(min=0)
    return (beyond**2).sum(dim=2).mean()
