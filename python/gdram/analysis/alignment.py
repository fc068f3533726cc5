"""Is the policy gradient aimed at the target? The REINFORCE estimate against the direction to the box.

For one image, K episodes sampled from the policy give, for the move placing glimpse t, the
REINFORCE ascent direction of that move's mean in image coordinates,

    v_t = mean_k A_k,t (l_k,t - mu_k,t),    A_k,t = r_k,t - mean_j r_j,t

(up to sigma^2 the gradient of E[r_t] with respect to the mean, with the image's own mean reward
as the baseline, the best one available). :func:`ascent_alignment` is the cosine between v_t and
the direction from the mean to the target box's centre, averaged over images: near 1 when the
reward tells the policy where the target is, near 0 when it does not (the reward is flat around
the mean, or the noise too small to find out). The single-episode cosine, each episode's own
A (l - mu), is what one sample brings to a training step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from gdram.models.gdram import GDRAM
from gdram.training.attention import box_centres
from gdram.training.loss import move_rewards


class Alignment(NamedTuple):
    """Cosines per move (T,) between the REINFORCE ascent direction and the direction to the target.

    Attributes:
        per_move: (T,) of v_t (the mean over K episodes), averaged over images.
        single_episode: (T,) of one episode's A (l - mu), averaged over episodes and images.
    """

    per_move: torch.Tensor
    single_episode: torch.Tensor


def ascent_alignment(
    locations: torch.Tensor, means: torch.Tensor, advantages: torch.Tensor, targets: torch.Tensor
) -> Alignment:
    """Cosines between REINFORCE's ascent directions and the directions to the targets.

    Args:
        locations: (T, N, K, 2) where each of K episodes of N images looked (the samples).
        means: (T, N, K, 2) the policy's mean for each of those glimpses.
        advantages: (T, N, K) the advantage of each move.
        targets: (N, 2) each image's target, in the same coordinates.
    """
    ascent = advantages[..., None] * (locations - means)  # (T, N, K, 2)
    to_target = targets[None, :, None, :] - means
    per_move = F.cosine_similarity(ascent.mean(dim=2), to_target.mean(dim=2), dim=-1).mean(dim=1)
    single = F.cosine_similarity(ascent, to_target, dim=-1).nan_to_num().mean(dim=(1, 2))
    return Alignment(per_move, single)


@torch.no_grad()
def reinforce_alignment(
    model: GDRAM,
    images: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    episodes: int = 64,
    reward: str = "probs",
) -> Alignment:
    """:func:`ascent_alignment` of ``model``'s policy on (N, C, H, W) ``images`` with their (N,) labels
    and (N, 4) boxes, from ``episodes`` sampled episodes per image (the model in eval mode, so that
    BatchNorm uses its running statistics) and ``reward`` (see :func:`gdram.training.loss.hybrid_loss`)."""
    if episodes < 2:
        raise ValueError(f"episodes must be at least 2 (the baseline is their mean), got {episodes}")
    model.eval()
    results = []
    for image, label in zip(images, labels, strict=True):
        result = model(image[None].expand(episodes, -1, -1, -1), sample=True)
        mask = torch.ones_like(result.log_probs)
        rewards = move_rewards(result, label.expand(episodes), reward, mask).expand_as(mask)  # (T, K)
        results.append((result.locations, result.mean_locations, rewards - rewards.mean(dim=1, keepdim=True)))
    locations, means, advantages = (torch.stack(parts, dim=1) for parts in zip(*results, strict=True))
    return ascent_alignment(locations, means, advantages, box_centres(boxes, model.config.image_hw))
