"""Backward pass of ``box_glimpse``: ``gradcheck`` in float64 with respect to the images, the
centres AND the sides, in both modes, for the public operator and for the reference.

Centres and sides are drawn at random (never round), so that no cell edge (area) or sample point
(bilinear) sits on a pixel boundary or centre, where the derivatives are one-sided.
"""

from __future__ import annotations

import pytest
import torch
from box_test_cases import random_boxes, random_images

from gdram_ext import MODES, box_glimpse, reference

FUNCTIONS = pytest.mark.parametrize("fn", [box_glimpse, reference.box_glimpse], ids=["operator", "reference"])

GRADCHECK_CASES = [
    # (id, shape, count, size (h, w), square, centre span, side span)
    ("inside-rectangles", (2, 1, 8, 9), 2, (3, 2), False, (-0.6, 0.6), (1.3, 6.7)),
    ("inside-squares", (1, 2, 8, 7), 3, (2, 2), True, (-0.6, 0.6), (1.3, 6.7)),
    ("across-the-border", (2, 1, 7, 8), 2, (2, 3), False, (0.8, 1.3), (2.2, 7.9)),
    ("cells-smaller-than-a-pixel", (1, 1, 6, 6), 2, (4, 3), False, (-0.4, 0.4), (0.6, 2.3)),
    ("boxes-larger-than-the-image", (1, 2, 5, 6), 2, (2, 2), False, (-0.3, 0.3), (7.3, 11.9)),
]


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("shape", "count", "size", "square", "centre_span", "side_span"),
    [pytest.param(*case[1:], id=case[0]) for case in GRADCHECK_CASES],
)
def test_gradcheck_passes_for_images_centres_and_sides_in_float64(
    fn, mode: str, shape, count: int, size, square: bool, centre_span, side_span
) -> None:
    images = random_images(*shape, torch.float64, seed=1).requires_grad_()
    centres, sides = random_boxes(
        shape[0], count, shape[2], shape[3], centre_span=centre_span, side_span=side_span, square=square, seed=2
    )

    def glimpse(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
        return fn(images, centres, sides, size, mode)

    inputs = (images, centres.requires_grad_(), sides.requires_grad_())
    assert torch.autograd.gradcheck(glimpse, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("needs", ["images", "centres", "sides", "centres+sides"])
def test_gradcheck_passes_with_only_some_inputs_requiring_grad(mode: str, needs: str) -> None:
    images = random_images(2, 2, 7, 9, torch.float64, seed=3)
    centres, sides = random_boxes(2, 2, 7, 9, centre_span=(-0.8, 0.8), seed=4)
    inputs = {"images": images, "centres": centres, "sides": sides}
    for name in needs.split("+"):
        inputs[name].requires_grad_()

    def glimpse(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
        return box_glimpse(images, centres, sides, (2, 3), mode)

    assert torch.autograd.gradcheck(glimpse, (images, centres, sides))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_passes_for_channels_last_and_strided_images(mode: str) -> None:
    base = random_images(1, 3, 6, 7, torch.float64, seed=5)
    centres, sides = random_boxes(1, 2, 6, 7, centre_span=(-0.7, 0.7), seed=6)
    channels_last = base.contiguous(memory_format=torch.channels_last).requires_grad_()
    strided = random_images(1, 6, 6, 14, torch.float64, seed=7)[:, ::2, :, ::2].detach().requires_grad_()

    def glimpse(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
        return box_glimpse(images, centres, sides, (2, 2), mode)

    for images in (channels_last, strided):
        inputs = (images, centres.clone().requires_grad_(), sides.clone().requires_grad_())
        assert torch.autograd.gradcheck(glimpse, inputs)


@pytest.mark.parametrize("mode", MODES)
def test_gradgradcheck_passes_for_the_reference(mode: str) -> None:
    """The reference is twice differentiable (away from the kinks)."""
    images = random_images(1, 1, 5, 6, torch.float64, seed=8).requires_grad_()
    centres, sides = random_boxes(1, 1, 5, 6, centre_span=(-0.5, 0.5), side_span=(1.3, 3.9), seed=9)

    def glimpse(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
        return reference.box_glimpse(images, centres, sides, (2, 2), mode)

    assert torch.autograd.gradgradcheck(glimpse, (images, centres.requires_grad_(), sides.requires_grad_()))


@pytest.mark.parametrize("mode", MODES)
def test_square_side_gradient_is_the_sum_of_the_width_and_height_gradients(mode: str) -> None:
    images = random_images(2, 2, 9, 8, torch.float64, seed=10)
    centres, sides = random_boxes(2, 3, 9, 8, square=True, seed=11)
    grad_output = torch.randn(2, 3, 2, 3, 2, dtype=torch.float64)
    square = sides.clone().requires_grad_()
    rectangle = torch.stack([sides, sides], dim=-1).requires_grad_()
    (grad_square,) = torch.autograd.grad(box_glimpse(images, centres, square, (3, 2), mode), square, grad_output)
    (grad_rectangle,) = torch.autograd.grad(
        box_glimpse(images, centres, rectangle, (3, 2), mode), rectangle, grad_output
    )
    torch.testing.assert_close(grad_square, grad_rectangle.sum(dim=-1), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_a_small_change_of_the_sides_changes_the_glimpse_as_the_side_gradient_says(mode: str) -> None:
    """First order: d out / d sides predicts the change of the output for a small step of the sides."""
    images = random_images(1, 1, 16, 16, torch.float64, seed=12)
    centres = torch.tensor([[[0.1037, -0.0213]]], dtype=torch.float64)
    sides = torch.tensor([[[9.137, 7.311]]], dtype=torch.float64, requires_grad=True)
    out = box_glimpse(images, centres, sides, (3, 3), mode).sum()
    (grad,) = torch.autograd.grad(out, sides)
    step = torch.tensor([[[1e-4, -2e-4]]], dtype=torch.float64)
    moved = box_glimpse(images, centres, sides.detach() + step, (3, 3), mode).sum()
    assert grad.abs().sum() > 0
    torch.testing.assert_close(moved - out.detach(), (grad * step).sum(), atol=1e-7, rtol=1e-3)
