"""The two training recipes: every ingredient does what its field says."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from gdram import GDRAM, GDRAMConfig, hybrid_loss
from gdram.models.config import RECIPE_INGREDIENTS
from gdram.models.networks import EmissionNetwork
from gdram.training.loss import border_loss, guidance_loss

SMALL = {
    "num_classes": 4,
    "in_channels": 1,
    "image_size": 32,
    "glimpse_size": 8,
    "num_scales": 2,
    "num_glimpses": 3,
    "hidden_size": 16,
    "glimpse_channels": (4, 8),
    "context_channels": 4,
    "mlp_hidden_size": 16,
}


def small(**changes: object) -> GDRAMConfig:
    return GDRAMConfig(**{**SMALL, **changes})


def gradient_norms(config: GDRAMConfig, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    model = GDRAM(config).train()
    result = model(torch.rand(6, 1, 32, 32))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    hybrid_loss(result, labels, reward=config.reward, normalize_advantage=config.normalize_advantage).total.backward()
    return {
        name: sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)
        for name, module in model.named_children()
        if any(True for _ in module.parameters())
    }


def test_recipes_fill_every_ingredient_and_an_explicit_field_wins() -> None:
    for recipe, ingredients in RECIPE_INGREDIENTS.items():
        config = small(recipe=recipe)
        for name, value in ingredients.items():
            expected = 1 / config.num_classes if value == "chance" else value
            assert getattr(config, name) == expected, (recipe, name)
    assert small(recipe="robust", reward="final").reward == "final"
    assert small(recipe="paper", context_mode="area").context_mode == "area"


def test_robust_sigma_range_keeps_its_pixels_on_images_larger_than_64() -> None:
    def sigma_range(**fields) -> tuple[float, float]:
        return GDRAMConfig(num_classes=10, in_channels=1, **fields).sigma_range

    assert sigma_range(image_size=64) == sigma_range(image_size=32) == (0.3, 1.0)
    assert sigma_range(image_size=128) == (0.15, 0.5)  # 9.6-32 px of a half side, as on 64 px
    assert sigma_range(image_size=(64, 256)) == (0.075, 0.25)  # the longer side
    assert sigma_range(image_size=128, sigma_range=(0.3, 1.0)) == (0.3, 1.0)
    assert sigma_range(image_size=128, recipe="paper") == RECIPE_INGREDIENTS["paper"]["sigma_range"]
    config = GDRAMConfig(num_classes=10, in_channels=1, image_size=512)
    assert GDRAMConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config


def test_config_round_trips_through_json_for_both_recipes() -> None:
    for recipe in RECIPE_INGREDIENTS:
        config = small(recipe=recipe)
        assert GDRAMConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config


def test_a_checkpoint_config_without_recipe_is_read_as_the_paper() -> None:
    stored = dataclasses.asdict(small(recipe="paper"))
    for name in [*RECIPE_INGREDIENTS["paper"], "recipe"]:
        stored.pop(name)
    assert GDRAMConfig.from_dict(stored) == small(recipe="paper")


def test_a_robust_checkpoint_config_from_before_the_new_ingredients_keeps_its_behaviour() -> None:
    stored = dataclasses.asdict(small(recipe="robust"))
    for name in ("moves", "bounded_mean", "policy_warmup", "warmup_glimpses"):
        stored.pop(name)
    expected = small(recipe="robust", moves="relative", bounded_mean=False, policy_warmup=0, warmup_glimpses="initial")
    assert GDRAMConfig.from_dict(stored) == expected


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"recipe": "fast"}, "recipe"),
        ({"sigma_range": (0.3, 0.1)}, "sigma_range"),
        ({"sigma_range": (0.0, 0.1)}, "sigma_range"),
        ({"reward": "dense"}, "reward"),
        ({"policy_trains": "all"}, "policy_trains"),
        ({"baseline_init": 1.5}, "baseline_init"),
        ({"policy_lr_scale": 0.0}, "policy_lr_scale"),
        ({"normalize_advantage": "yes"}, "normalize_advantage"),
        ({"moves": "diagonal"}, "moves"),
        ({"bounded_mean": 1}, "bounded_mean"),
        ({"policy_warmup": -1}, "policy_warmup"),
    ],
)
def test_bad_ingredients_are_rejected_by_name(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        small(**changes)


def test_paper_recipe_trains_neither_the_upper_core_nor_the_context_network() -> None:
    norms = gradient_norms(small(recipe="paper"))
    assert norms["upper_core"] == 0 and norms["context"] == 0
    assert norms["emission"] > 0 and norms["glimpse"] > 0


def test_where_pathway_lets_the_policy_gradient_train_upper_core_and_context_but_not_the_classifier() -> None:
    torch.manual_seed(0)
    model = GDRAM(small(recipe="robust")).train()
    result = model(torch.rand(6, 1, 32, 32))
    reinforce = hybrid_loss(result, torch.tensor([0, 1, 2, 3, 0, 1]), reward="steps").reinforce
    reinforce.backward()
    grads = {
        name: sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)
        for name, module in model.named_children()
        if any(True for _ in module.parameters())
    }
    assert grads["upper_core"] > 0 and grads["context"] > 0 and grads["emission"] > 0
    assert grads["lower_core"] == 0 and grads["glimpse"] == 0 and grads["prediction"] == 0


def test_policy_modules_are_the_where_pathway_only_when_asked() -> None:
    assert [type(m).__name__ for m in GDRAM(small(recipe="paper")).policy_modules()] == ["EmissionNetwork"]
    names = [type(m).__name__ for m in GDRAM(small(recipe="robust")).policy_modules()]
    assert names == ["EmissionNetwork", "CoreNetwork", "ContextNetwork"]


@pytest.mark.parametrize("sigma_range", [(0.05, 0.25), (math.exp(-0.5), math.exp(0.5))])
def test_learned_sigma_stays_in_its_range_even_for_huge_inputs(sigma_range: tuple[float, float]) -> None:
    emission = EmissionNetwork(8, 16, learned_sigma=True, fixed_sigma=0.1, sigma_range=sigma_range).train()
    sigma = emission(torch.randn(64, 8) * 1e4, sample=True)[2].detach()
    assert float(sigma.min()) >= sigma_range[0] * (1 - 1e-6)
    assert float(sigma.max()) <= sigma_range[1] * (1 + 1e-6)


@pytest.mark.parametrize("unclipped", [False, True])
def test_log_prob_is_of_the_unclipped_sample_only_when_asked(unclipped: bool) -> None:
    emission = EmissionNetwork(8, 16, learned_sigma=False, fixed_sigma=2.0, unclipped_log_prob=unclipped).train()
    torch.manual_seed(3)
    h = torch.randn(256, 8)
    torch.manual_seed(4)
    action, log_prob, sigma, mu = emission(h, sample=True)
    torch.manual_seed(4)
    drawn = mu + sigma * torch.randn_like(mu)  # the same noise
    assert bool((drawn.abs() > 1).any())  # some samples were clipped
    taken = drawn if unclipped else drawn.clamp(-1, 1)
    expected = torch.distributions.Normal(mu, sigma).log_prob(taken).sum(1)
    torch.testing.assert_close(log_prob, expected)
    torch.testing.assert_close(action, drawn.clamp(-1, 1))


def test_zero_init_mu_starts_every_first_glimpse_at_the_centre() -> None:
    model = GDRAM(small(recipe="robust")).eval()
    result = model(torch.rand(5, 1, 32, 32))
    assert torch.equal(result.locations, torch.zeros_like(result.locations))


@pytest.mark.parametrize("moves", ["relative", "absolute"])
def test_absolute_moves_place_each_glimpse_where_its_action_says(moves: str) -> None:
    model = GDRAM(small(recipe="robust", moves=moves)).eval()
    location, action = torch.tensor([[0.5, -0.5]]), torch.tensor([[0.25, 0.25]])
    expected = action if moves == "absolute" else location + model.move_scale * action
    torch.testing.assert_close(model.move(location, action), model.clip_location(expected))


@pytest.mark.parametrize("bounded", [False, True])
def test_bounded_mean_keeps_the_policy_mean_inside_the_clip(bounded: bool) -> None:
    model = GDRAM(small(recipe="robust", bounded_mean=bounded)).eval()
    torch.nn.init.constant_(model.emission.mu.bias, 10.0)  # tanh saturates: the mean asks for the corner
    result = model(torch.rand(3, 1, 32, 32))
    beyond = bool((result.mean_locations.abs() > model.location_bound + 1e-6).any())
    assert beyond is not bounded
    assert bool((result.locations.abs() <= model.location_bound).all())


@pytest.mark.parametrize("straight", [False, True])
def test_straight_through_mean_lets_a_saturated_mean_learn_to_come_back(straight: bool) -> None:
    torch.manual_seed(0)
    model = GDRAM(small(recipe="robust", straight_through_mean=straight)).train()
    torch.nn.init.constant_(model.emission.mu.bias, 10.0)  # tanh saturates: every mean sits in the corner
    result = model(torch.rand(4, 1, 32, 32))
    torch.testing.assert_close(result.mean_locations[1:], model.location_bound.expand(2, 4, 2))  # forward unchanged
    (result.log_probs * torch.ones_like(result.log_probs)).sum().backward()
    pull = float(model.emission.mu.bias.grad.abs().max())
    assert (pull > 1e-3) is straight, pull


def test_ram_moves_are_absolute_whatever_the_recipe() -> None:
    for recipe in RECIPE_INGREDIENTS:
        assert not GDRAM(small(recipe=recipe, variant="ram")).relative_moves
    assert GDRAM(small(recipe="paper")).relative_moves


def test_baseline_starts_at_the_chance_reward() -> None:
    model = GDRAM(small(recipe="robust")).train()
    result = model(torch.rand(5, 1, 32, 32))
    torch.testing.assert_close(result.baselines, torch.full_like(result.baselines, 0.25))


@pytest.mark.parametrize("before", [False, True])
def test_baseline_before_move_does_not_see_the_glimpse_its_move_placed(before: bool) -> None:
    torch.manual_seed(0)
    model = GDRAM(small(recipe="paper", baseline_before_move=before)).eval()
    torch.nn.init.normal_(model.baseline.mlp[1].weight)
    images = torch.rand(4, 1, 32, 32)
    here = model(images, locations=torch.full((4, 2), -0.5)).baselines
    there = model(images, locations=torch.full((4, 2), 0.5)).baselines
    assert torch.equal(here[0], there[0]) is before  # b_0 reads only the context state when before
    assert not torch.equal(here[1], there[1])


def test_weight_trains_sigma_only_when_asked() -> None:
    for trains in (False, True):
        torch.manual_seed(0)
        model = GDRAM(small(recipe="robust", weight_trains_sigma=trains)).train()
        result = model(torch.rand(6, 1, 32, 32))
        torch.nn.functional.cross_entropy(result.logits, torch.tensor([0, 1, 2, 3, 0, 1])).backward()
        grad = model.emission.log_var.weight.grad
        assert (grad is not None and float(grad.abs().sum()) > 0) is trains


def test_location_gradient_lets_the_classification_loss_move_the_glimpses() -> None:
    for pathwise in (False, True):
        torch.manual_seed(0)
        model = GDRAM(small(recipe="robust", location_gradient=pathwise)).train()
        torch.nn.init.normal_(model.emission.mu.weight, std=0.1)
        result = model(torch.rand(6, 1, 32, 32))
        torch.nn.functional.cross_entropy(result.logits, torch.tensor([0, 1, 2, 3, 0, 1])).backward()
        grad = model.emission.mu.weight.grad
        assert (grad is not None and float(grad.abs().sum()) > 0) is pathwise


def test_steps_reward_credits_each_move_with_the_right_predictions_from_it_on() -> None:
    model = GDRAM(small(recipe="robust")).train()
    result = model(torch.rand(2, 1, 32, 32))
    labels = torch.tensor([1, 2])
    step_logits = torch.zeros(3, 2, 4)
    step_logits[0, 0, 1] = step_logits[2, 0, 1] = 5  # sample 0 right at steps 0 and 2
    step_logits[:, 1, 0] = 5  # sample 1 always wrong
    result = result._replace(step_logits=step_logits, baselines=torch.zeros(3, 2), log_probs=torch.ones(3, 2))
    parts = hybrid_loss(result, labels, reward="steps")
    rewards = torch.tensor([[2 / 3, 0.0], [1 / 2, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(parts.baseline, (rewards**2).mean())
    torch.testing.assert_close(parts.reinforce, -rewards.sum(0).mean())


def test_gain_reward_credits_each_move_with_what_its_own_glimpse_adds() -> None:
    model = GDRAM(small(recipe="robust")).train()
    result = model(torch.rand(2, 1, 32, 32))
    labels = torch.tensor([1, 2])
    probs = torch.tensor([[0.4, 0.25], [0.4, 0.1], [0.9, 0.7]])  # p_t(label), (T, B)
    rest = (1 - probs) / 3
    step_logits = rest[..., None].expand(3, 2, 4).clone()
    step_logits[:, 0, 1], step_logits[:, 1, 2] = probs[:, 0], probs[:, 1]
    result = result._replace(step_logits=step_logits.log(), baselines=torch.zeros(3, 2), log_probs=torch.ones(3, 2))
    parts = hybrid_loss(result, labels, reward="gain")
    gains = torch.tensor([[0.4 - 0.25, 0.25 - 0.25], [0.0, 0.1 - 0.25], [0.5, 0.6]])
    torch.testing.assert_close(parts.baseline, (gains**2).mean())
    torch.testing.assert_close(parts.reinforce, -gains.sum(0).mean())


def test_normalized_advantage_has_unit_spread_over_the_batch() -> None:
    model = GDRAM(small(recipe="robust")).train()
    result = model(torch.rand(4, 1, 32, 32))
    labels = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, 4)
    logits[[0, 1], [0, 1]] = 5  # two right, two wrong
    result = result._replace(logits=logits, baselines=torch.zeros(3, 4), log_probs=torch.ones(3, 4))
    plain = hybrid_loss(result, labels, reward="final").reinforce
    scaled = hybrid_loss(result, labels, reward="final", normalize_advantage=True).reinforce
    spread = torch.tensor([1.0, 1.0, 0.0, 0.0]).std()
    torch.testing.assert_close(scaled, plain / spread)


def test_guidance_loss_uses_only_samples_with_boxes_and_falls_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = GDRAM(small(recipe="robust")).train()
    images = torch.rand(6, 1, 32, 32)
    boxes = torch.tensor([[20.0, 2, 30, 12]] * 3 + [[float("nan")] * 4] * 3)
    result = model(images)
    moved = result._replace(mean_locations=result.mean_locations.clone())
    moved.mean_locations[:, 3:] += 100.0  # samples without a box do not count
    torch.testing.assert_close(guidance_loss(moved, boxes, (32, 32)), guidance_loss(result, boxes, (32, 32)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = guidance_loss(model(images), boxes, (32, 32))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0]


def test_guidance_loss_without_any_box_is_zero() -> None:
    model = GDRAM(small()).train()
    result = model(torch.rand(3, 1, 32, 32))
    assert float(guidance_loss(result, torch.full((3, 4), float("nan")), (32, 32)).detach()) == 0.0


def test_border_loss_is_zero_inside_and_pulls_an_outside_mean_back() -> None:
    model = GDRAM(small()).train()
    result = model(torch.rand(2, 1, 32, 32))
    bound = model.location_bound
    inside = result._replace(mean_locations=torch.zeros(3, 2, 2))
    assert float(border_loss(inside, bound)) == 0.0
    outside = torch.full((3, 2, 2), 2.0, requires_grad=True)
    loss = border_loss(result._replace(mean_locations=outside), bound)
    torch.testing.assert_close(loss, 2 * (2.0 - bound[0]) ** 2)
    loss.backward()
    assert bool((outside.grad > 0).all())  # descent moves the mean back towards the image
