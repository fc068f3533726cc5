"""The retina glimpse is a special case of the box glimpse: S square boxes sharing one centre,
of sides ``base * factor**i``, read into ``size x size`` cells and laid out scale-major.

    retina_glimpse(images, loc, size, S, factor, mode, base)
        == box_glimpse(images, loc[:, None].expand(B, S, 2), base * factor**arange(S), size, mode)
           .reshape(B, S * C, size, size)

and so are their gradients (the shared centre's gradient is the sum over the S boxes).
"""

from __future__ import annotations

import pytest
import torch
from box_test_cases import random_images

from gdram_ext import MODES, box_glimpse, reference, retina_glimpse
from gdram_ext.contract import scale_sides

# (shape, locations span, size, num_scales, scale_factor, base_size)
RETINA_CASES = [
    ((2, 3, 16, 16), (-0.9, 0.9), 4, 3, 2.0, None),
    ((3, 2, 11, 17), (-1.3, 1.3), 5, 4, 1.5, 2.7),  # H != W, across and beyond the border
    ((1, 1, 9, 9), (-0.5, 0.5), 3, 2, 0.6, 8.3),  # shrinking scales
    ((2, 1, 7, 12), (0.8, 1.2), 1, 1, 1.0, 4.4),  # one scale, one cell
]


def as_boxes(locations: torch.Tensor, size: int, num_scales: int, scale_factor: float, base_size: float | None):
    """The retina's S squares as boxes: (B, S, 2) centres and (B, S) sides."""
    batch = locations.shape[0]
    centres = locations[:, None].expand(batch, num_scales, 2)
    sides = locations.new_tensor(scale_sides(size, num_scales, scale_factor, base_size)).expand(batch, num_scales)
    return centres, sides


def locations_in(batch: int, span: tuple[float, float], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    low, high = span
    return torch.rand(batch, 2, generator=generator, dtype=torch.float64) * (high - low) + low


@pytest.mark.parametrize(("shape", "span", "size", "num_scales", "scale_factor", "base_size"), RETINA_CASES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("retina", "boxes"),
    [(retina_glimpse, box_glimpse), (reference.retina_glimpse, reference.box_glimpse)],
    ids=["operator", "reference"],
)
def test_retina_glimpse_equals_box_glimpse_of_concentric_squares(
    retina, boxes, shape, span, size: int, num_scales: int, scale_factor: float, base_size: float | None, mode: str
) -> None:
    batch, channels = shape[:2]
    images = random_images(*shape, torch.float64, seed=1).requires_grad_()
    locations = locations_in(batch, span).requires_grad_()
    expected = retina(images, locations, size, num_scales, scale_factor, mode, base_size)
    grad_output = torch.randn(expected.shape, dtype=torch.float64)
    expected_grads = torch.autograd.grad(expected, (images, locations), grad_output)

    centres, sides = as_boxes(locations, size, num_scales, scale_factor, base_size)
    got = boxes(images, centres, sides, size, mode)
    assert got.shape == (batch, num_scales, channels, size, size)
    got = got.reshape(batch, num_scales * channels, size, size)
    got_grads = torch.autograd.grad(got, (images, locations), grad_output)

    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got_grads[0], expected_grads[0], atol=1e-12, rtol=1e-12)
    scale = expected_grads[1].abs().max().item()
    torch.testing.assert_close(got_grads[1], expected_grads[1], atol=1e-10 * max(scale, 1.0), rtol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_the_relation_holds_in_float32_and_channels_last(mode: str) -> None:
    images = random_images(2, 3, 20, 15, torch.float32, seed=2).contiguous(memory_format=torch.channels_last)
    locations = locations_in(2, (-1.1, 1.1), seed=3).float()
    expected = retina_glimpse(images, locations, 6, 3, 1.7, mode, 3.1)
    centres, sides = as_boxes(locations, 6, 3, 1.7, 3.1)
    got = box_glimpse(images, centres, sides, 6, mode).reshape(2, 9, 6, 6)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_non_finite_and_far_locations_give_zeros_in_both(mode: str) -> None:
    images = random_images(3, 2, 9, 9, torch.float64, seed=4)
    locations = torch.tensor([[float("nan"), 0.0], [0.2, float("inf")], [40.0, 0.1]], dtype=torch.float64)
    expected = retina_glimpse(images, locations, 3, 2, 2.0, mode, 2.0)
    centres, sides = as_boxes(locations, 3, 2, 2.0, 2.0)
    got = box_glimpse(images, centres, sides, 3, mode).reshape(3, 4, 3, 3)
    assert torch.equal(got, torch.zeros_like(got))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
