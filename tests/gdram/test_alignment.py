"""The alignment of the REINFORCE estimate with the direction to the target (gdram.analysis.alignment)."""

from __future__ import annotations

import pytest
import torch
from gdram import GDRAM
from gdram.analysis.alignment import ascent_alignment, reinforce_alignment
from tiny import tiny_config


def sampled_moves(steps: int = 3, images: int = 5, episodes: int = 400) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    means = torch.rand(steps, images, 1, 2).expand(-1, -1, episodes, -1) * 0.4 - 0.2
    noise = torch.randn(steps, images, episodes, 2) * 0.3
    targets = torch.rand(images, 2) * 1.6 - 0.8
    return means + noise, means, noise, targets


def test_a_reward_that_grows_towards_the_target_is_aligned_with_it() -> None:
    locations, means, noise, targets = sampled_moves()
    towards = (noise * (targets[None, :, None, :] - means)).sum(dim=-1)  # reward: progress towards the target
    found = ascent_alignment(locations, means, towards - towards.mean(dim=2, keepdim=True), targets)
    assert bool((found.per_move > 0.95).all())
    assert bool((found.single_episode > 0.3).all())
    away = ascent_alignment(locations, means, -towards, targets)
    assert bool((away.per_move < -0.95).all())


def test_a_reward_blind_to_the_place_is_not_aligned() -> None:
    locations, means, _, targets = sampled_moves()
    blind = torch.randn(locations.shape[:-1])  # independent of where the glimpses went
    found = ascent_alignment(locations, means, blind, targets)
    assert float(found.per_move.abs().max()) < 0.3
    assert float(found.single_episode.abs().max()) < 0.05


def test_reinforce_alignment_of_a_model_gives_one_cosine_per_move() -> None:
    torch.manual_seed(0)
    model = GDRAM(tiny_config())
    images, labels = torch.rand(2, 1, 24, 24), torch.tensor([0, 2])
    boxes = torch.tensor([[2.0, 2.0, 10.0, 10.0], [14.0, 12.0, 22.0, 20.0]])
    found = reinforce_alignment(model, images, labels, boxes, episodes=8)
    assert found.per_move.shape == found.single_episode.shape == (3,)
    assert bool((found.per_move.abs() <= 1 + 1e-6).all())
    with pytest.raises(ValueError, match="episodes"):
        reinforce_alignment(model, images, labels, boxes, episodes=1)
