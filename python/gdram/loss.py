"""The hybrid loss of Gaussian RAM (eq. 21-24): classification + baseline regression + REINFORCE."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from gdram.model import GlimpseResult


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
) -> LossParts:
    """The paper's hybrid loss from a forward's result and the (B,) int64 class labels.

    * classification: cross-entropy of the final, weighted prediction ``result.logits`` (eq. 16);
    * reward: r = 1 if the final prediction's arg-max is the label, else 0 (the paper's reward,
      computed on the weighted prediction as in the published implementation), the same for
      every step of a sample (no discount);
    * baseline: mean over steps and samples of (b_t - r)^2 (eq. 21);
    * reinforce: mean over samples of -sum_t log pi(move placing glimpse t) * (r - b_t), with b_t
      detached (eq. 22-24), so that gradient descent raises the log-probability of moves whose
      reward beats the baseline.

    Steps a sample did not use (F-GDRAM, ``t >= glimpses_used``) are left out. For a result with
    no moves (``CNNBaseline``: ``log_probs`` of shape (0, B)) the policy terms are 0 and
    ``total`` is the cross-entropy. No host-device synchronisation on accelerators: there the
    label range is checked with an asynchronous device assertion.
    """
    logits = result.logits
    _check_labels(labels, logits)
    labels = labels.long()
    classification = F.cross_entropy(logits, labels)
    reward = (logits.detach().argmax(dim=1) == labels).to(logits.dtype)  # (B,)
    steps = result.log_probs.shape[0]
    used = torch.arange(steps, device=logits.device)[:, None] < result.glimpses_used[None, :]  # (T, B)
    mask = used.to(logits.dtype)
    baseline = (mask * (result.baselines - reward) ** 2).sum() / mask.sum().clamp(min=1.0)
    advantage = reward - result.baselines.detach()  # (T, B)
    reinforce = -(mask * result.log_probs * advantage).sum(dim=0).mean()
    total = classification + baseline_weight * baseline + reinforce_weight * reinforce
    return LossParts(total=total, classification=classification, baseline=baseline, reinforce=reinforce)


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
