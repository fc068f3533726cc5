"""The GDRAM model family: outputs, sizes, the eye's moves, the weights, F-GDRAM, devices, compile."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from gdram import (
    GDRAM,
    VARIANTS,
    CNNBaseline,
    GDRAMConfig,
    GlimpseResult,
    count_parameters,
    create_model,
    hybrid_loss,
)
from gdram.models.networks import SIGMA_HIGH, SIGMA_LOW, uncertainty_weight
from tiny import SMALL
from torch import nn

from gdram_ext import reference

ATTENTION_VARIANTS = [variant for variant in VARIANTS if variant != "cnn"]


def small_config(**changes: object) -> GDRAMConfig:
    return GDRAMConfig(**{**SMALL, **changes})


def small_images(batch: int = 4, config: GDRAMConfig | None = None) -> torch.Tensor:
    config = config or small_config()
    return torch.rand(batch, config.in_channels, *config.image_hw)


class ScriptedEmission(nn.Module):
    """Stands in for the emission network: action 0 and, at its k-th call, sigmas giving ``weights[k]``."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.sigmas = SIGMA_LOW + (1 - weights) * (SIGMA_HIGH - SIGMA_LOW)  # (calls, B)
        self.calls = 0

    def forward(self, h: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        sigma = self.sigmas[self.calls][:, None].expand(-1, 2).to(h)
        self.calls += 1
        return h.new_zeros(h.shape[0], 2), h.new_zeros(h.shape[0]), sigma, h.new_zeros(h.shape[0], 2)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("training", [True, False])
def test_every_variant_returns_a_glimpse_result_of_documented_shapes(variant: str, training: bool) -> None:
    config = small_config(variant=variant)
    model = create_model(config).train(training)
    result = model(small_images(4, config))
    steps = 1 if variant == "cnn" else config.num_glimpses
    moves = 0 if variant == "cnn" else steps
    assert isinstance(result, GlimpseResult)
    assert isinstance(model, CNNBaseline if variant == "cnn" else GDRAM)
    assert model.config is config
    expected = {
        "logits": (4, 5),
        "step_logits": (steps, 4, 5),
        "locations": (steps, 4, 2),
        "log_probs": (moves, 4),
        "baselines": (moves, 4),
        "weights": (steps, 4),
        "sigmas": (steps, 4, 2),
        "glimpses_used": (4,),
    }
    for name, shape in expected.items():
        value = getattr(result, name)
        assert tuple(value.shape) == shape, name
        assert value.dtype == (torch.int64 if name == "glimpses_used" else torch.float32), name
        assert torch.isfinite(value.float()).all(), name
    assert (result.glimpses_used == steps).all()


def test_paper_model_has_the_published_parameter_counts() -> None:
    ten = count_parameters(GDRAM(GDRAMConfig(num_classes=10, recipe="paper")))
    hundred = count_parameters(GDRAM(GDRAMConfig(num_classes=100, recipe="paper")))
    assert abs(ten - 1_134_799) <= 0.01 * 1_134_799
    assert (ten, hundred) == (1_134_799, 1_157_929)
    robust = count_parameters(GDRAM(GDRAMConfig(num_classes=10)))
    assert robust == ten - 2 * 256  # no BatchNorm (weight and bias) in the emission network
    cnn = count_parameters(create_model(GDRAMConfig(num_classes=10, variant="cnn")))
    assert abs(cnn - ten) <= 0.05 * ten


def test_default_config_is_the_paper_model_and_round_trips_through_json() -> None:
    config = GDRAMConfig(num_classes=10)
    assert (config.glimpse_size, config.num_scales, config.scale_factor) == (12, 4, 2.0)
    assert (config.num_glimpses, config.image_hw, config.hidden_size, config.variant) == (8, (128, 128), 128, "gdram")
    for cfg in (config, small_config(image_size=(32, 40), variant="ram")):
        assert GDRAMConfig(**dataclasses.asdict(cfg)) == cfg
        assert GDRAMConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"variant": "transformer"}, "variant"),
        ({"num_classes": 0}, "num_classes"),
        ({"image_size": (32, 32, 3)}, "image_size"),
        ({"retina_mode": "nearest"}, "retina_mode"),
        ({"glimpse_size": 40}, "glimpse_size"),
        ({"fixed_sigma": -0.1}, "fixed_sigma"),
        ({"official_footprint": True, "image_size": (32, 40)}, "square"),
    ],
)
def test_bad_config_raises_naming_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_config(**changes)


@pytest.mark.parametrize(
    ("images", "error"),
    [
        (torch.rand(2, 1, 32, 32), ValueError),
        (torch.rand(2, 3, 28, 28), ValueError),
        (torch.rand(3, 32, 32), ValueError),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int64), TypeError),
    ],
)
@pytest.mark.parametrize("variant", ["gdram", "cnn"])
def test_bad_images_raise_naming_the_expected_shape(images: torch.Tensor, error: type, variant: str) -> None:
    with pytest.raises(error, match="images"):
        create_model(small_config(variant=variant))(images)


def test_weights_lie_in_unit_interval_and_logits_are_their_eq16_average() -> None:
    model = GDRAM(small_config(num_glimpses=4))
    result = model(small_images())
    assert (result.weights > 0).all() and (result.weights <= 1).all()
    assert (result.weights[0] == 1).all()
    torch.testing.assert_close(result.weights[1:], torch.stack([uncertainty_weight(s) for s in result.sigmas[1:]]))
    expected = (result.weights[..., None] * result.step_logits).sum(0) / result.weights.sum(0)[:, None]
    torch.testing.assert_close(result.logits, expected)


def test_uncertainty_weight_follows_eq12_to_15() -> None:
    sigma = torch.tensor([[SIGMA_LOW, SIGMA_LOW], [SIGMA_HIGH, SIGMA_HIGH], [SIGMA_LOW, SIGMA_HIGH], [1.0, 1.0]])
    expected = torch.tensor([1.0, 0.0, 0.5, 1 - (1 - math.exp(-0.5)) / (math.exp(0.5) - math.exp(-0.5))])
    torch.testing.assert_close(uncertainty_weight(sigma), expected)


@pytest.mark.parametrize("variant", ["dram", "ram", "ram-dl"])
def test_fixed_sigma_variants_use_fixed_sigma_and_unit_weights(variant: str) -> None:
    config = small_config(variant=variant, fixed_sigma=0.2)
    model = GDRAM(config)
    result = model(small_images())
    assert model.emission.log_var is None
    assert (result.sigmas == 0.2).all()
    assert (result.weights == 1).all()
    torch.testing.assert_close(result.logits, result.step_logits.mean(0))


@pytest.mark.parametrize("variant", ["gdram", "gram", "dram", "ram-dl"])
def test_relative_moves_are_limited_to_half_the_largest_glimpse(variant: str) -> None:
    config = small_config(variant=variant, num_glimpses=5, image_size=64, num_scales=3)
    model = GDRAM(config)
    half_largest = config.glimpse_size * config.scale_factor ** (config.num_scales - 1) / 64  # 0.5
    torch.testing.assert_close(model.move_scale, torch.full((2,), half_largest))
    location = torch.tensor([[0.0, 0.0], [0.1, -0.2], [0.7, -0.7]], requires_grad=True)
    action = torch.tensor([[1.0, -1.0], [-0.5, 0.25], [1.0, -1.0]])
    moved = model.move(location, action)
    bound = 1 - 8 / 64
    torch.testing.assert_close(moved, torch.tensor([[0.5, -0.5], [-0.15, -0.075], [bound, -bound]]))
    assert not moved.requires_grad  # l_t is detached (eq. 9)
    steps = model(small_images(3, config)).locations.diff(dim=0)
    assert (steps.abs() <= half_largest + 1e-6).all() and (steps.abs() > 0).any()


def test_locations_are_clipped_so_the_smallest_glimpse_stays_inside() -> None:
    config = small_config(image_size=(32, 64), num_glimpses=4)
    model = GDRAM(config).eval()
    bound = torch.tensor([1 - 8 / 64, 1 - 8 / 32])  # (x: W, y: H)
    torch.testing.assert_close(model.location_bound, bound)
    with torch.no_grad():
        model.emission.mu.bias.copy_(torch.tensor([-50.0, 50.0]))
    locations = model(small_images(2, config)).locations
    assert (locations.abs() <= bound + 1e-6).all()
    torch.testing.assert_close(locations[-1], torch.stack([-bound[0], bound[1]]).expand(2, 2))


def test_ram_uses_absolute_locations() -> None:
    model = GDRAM(small_config(variant="ram")).eval()
    with torch.no_grad():
        model.emission.mu.bias.copy_(torch.tensor([50.0, -50.0]))
    locations = model(small_images(2)).locations
    bound = model.location_bound
    torch.testing.assert_close(locations, torch.stack([bound[0], -bound[1]]).expand_as(locations))


def test_fast_mode_stops_each_sample_after_two_low_weights() -> None:
    config = small_config(num_glimpses=6)
    model = GDRAM(config).eval()
    images = small_images(3, config)
    schedule = torch.tensor(
        [  # weight of the move at each emission call (call 0 places glimpse 0, whose weight is 1)
            [0.9, 0.2, 0.2],
            [0.9, 0.3, 0.4],
            [0.9, 0.3, 0.9],
            [0.9, 0.4, 0.3],
            [0.9, 0.4, 0.2],
            [0.9, 0.4, 0.9],
        ]
    )
    model.emission = ScriptedEmission(schedule)
    with torch.no_grad():
        full = model(images)
        model.emission.calls = 0
        fast = model(images, fast=True)
    assert fast.glimpses_used.tolist() == [6, 3, 5]
    assert fast.step_logits.shape[0] == 6
    used = torch.arange(6)[:, None] < fast.glimpses_used
    torch.testing.assert_close(fast.weights, full.weights * used)
    torch.testing.assert_close(fast.step_logits, full.step_logits)
    for sample, count in enumerate(fast.glimpses_used.tolist()):
        weights = full.weights[:count, sample, None]
        expected = (weights * full.step_logits[:count, sample]).sum(0) / weights.sum()
        torch.testing.assert_close(fast.logits[sample], expected)


def test_fast_mode_ends_the_loop_once_every_sample_has_stopped() -> None:
    model = GDRAM(small_config(num_glimpses=6)).eval()
    model.emission = ScriptedEmission(torch.full((6, 2), 0.1))
    with torch.no_grad():
        fast = model(small_images(2), fast=True)
    assert fast.glimpses_used.tolist() == [3, 3]
    assert all(value.shape[0] == 3 for value in fast[1:7])


def test_fast_mode_requires_evaluation_mode() -> None:
    with pytest.raises(ValueError, match="eval"):
        GDRAM(small_config()).train()(small_images(), fast=True)


def test_training_on_a_single_image_raises_a_clear_error() -> None:
    model = GDRAM(small_config())
    with pytest.raises(ValueError, match="at least 2"):
        model(small_images(1))
    assert model.eval()(small_images(1)).logits.shape == (1, 5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_evaluation_is_deterministic(variant: str) -> None:
    model = create_model(small_config(variant=variant)).eval()
    images = small_images()
    with torch.no_grad():
        first, second = model(images), model(images)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_training_samples_the_moves() -> None:
    model = GDRAM(small_config())
    images = small_images()
    assert not torch.equal(model(images).locations, model(images).locations)


def test_policy_and_baseline_inputs_are_detached() -> None:
    model = GDRAM(small_config())
    result = model(small_images())
    policy = {name for name, _ in model.emission.named_parameters(prefix="emission")}
    baseline = {name for name, _ in model.baseline.named_parameters(prefix="baseline")}

    def trained_by(loss: torch.Tensor) -> set[str]:
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True, retain_graph=True)
        return {name for (name, _), grad in zip(model.named_parameters(), grads, strict=True) if grad is not None}

    assert trained_by(result.log_probs.sum()) == policy
    assert trained_by(result.baselines.sum()) == baseline
    classification = trained_by(result.logits.sum())
    assert classification.isdisjoint(baseline | {"emission.mu.weight", "emission.mu.bias"})
    assert "emission.log_var.weight" in classification  # the weights of eq. 16 learn from the prediction


def test_retina_can_be_replaced_by_another_implementation() -> None:
    class ReferenceRetina(nn.Module):
        def forward(self, images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
            return reference.retina_glimpse(images, locations, size=8, num_scales=2)

    model = GDRAM(small_config()).eval()
    images = small_images()
    with torch.no_grad():
        fused = model(images)
        model.retina = ReferenceRetina()
        replaced = model(images)
    torch.testing.assert_close(replaced.logits, fused.logits)


def test_training_step_creates_no_host_synchronisation_or_cpu_tensor() -> None:
    """On meta tensors any ``.item()``/``bool()`` or a non-scalar CPU tensor would raise."""
    model = GDRAM(small_config(num_glimpses=4)).to("meta")
    result = model(torch.empty(4, 3, 32, 32, device="meta"))
    assert result.logits.device.type == "meta" and result.glimpses_used.device.type == "meta"
    hybrid_loss(result, torch.zeros(4, dtype=torch.int64, device="meta")).total.backward()
    assert model.emission.mu.weight.grad.device.type == "meta"
    with pytest.raises(RuntimeError, match="meta"):  # F-GDRAM's stopping check is the one sync
        model.eval()(torch.empty(4, 3, 32, 32, device="meta"), fast=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("variant", ["gdram", "ram", "cnn"])
def test_cpu_and_cuda_agree(variant: str) -> None:
    device = torch.device("cuda")
    model = create_model(small_config(variant=variant)).eval()
    images = small_images()
    with torch.no_grad():
        on_cpu = model(images)
        on_cuda = model.to(device)(images.to(device))
    for name, a, b in zip(GlimpseResult._fields, on_cpu, on_cuda, strict=True):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4, msg=name)


def test_torch_compile_of_the_training_forward_and_loss_runs_as_one_graph() -> None:
    """``fullgraph=True``: no graph break, so no host synchronisation (``aot_eager`` keeps CI fast)."""
    model = GDRAM(small_config(num_glimpses=2))

    def training_loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return hybrid_loss(model(images), labels).total

    compiled = torch.compile(training_loss, fullgraph=True, backend="aot_eager")
    loss = compiled(small_images(), torch.tensor([0, 1, 2, 3]))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert model.glimpse.image_fc.weight.grad is not None and model.emission.mu.weight.grad is not None
