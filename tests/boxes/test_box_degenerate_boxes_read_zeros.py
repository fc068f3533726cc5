"""Degenerate boxes and empty calls: a box whose centre is not finite, whose side (either side) is
not finite or not > 0, or that lies far outside the image reads zeros and has zero, finite
gradients, without disturbing the other boxes; K = 0 and B = 0 give empty outputs.
"""

from __future__ import annotations

import math

import pytest
import torch
from box_test_cases import random_boxes, random_images

from gdram_ext import MODES, box_glimpse, reference

FUNCTIONS = pytest.mark.parametrize("fn", [box_glimpse, reference.box_glimpse], ids=["operator", "reference"])
NAN, INF = math.nan, math.inf

# (id, centre (x, y), sides (width, height))
BAD_BOXES = [
    ("centre-x-nan", (NAN, 0.1), (3.3, 4.1)),
    ("centre-y-nan", (0.1, NAN), (3.3, 4.1)),
    ("centre-x-inf", (INF, 0.1), (3.3, 4.1)),
    ("centre-y--inf", (0.1, -INF), (3.3, 4.1)),
    ("centre-huge", (1e30, -1e30), (3.3, 4.1)),
    ("centre-far-right", (5.0, 0.0), (3.3, 4.1)),  # more than a box and a pixel away
    ("centre-far-above", (0.0, -3.0), (3.3, 4.1)),
    ("width-nan", (0.1, 0.2), (NAN, 4.1)),
    ("height-nan", (0.1, 0.2), (3.3, NAN)),
    ("width-inf", (0.1, 0.2), (INF, 4.1)),
    ("height-inf", (0.1, 0.2), (3.3, INF)),
    ("width--inf", (0.1, 0.2), (-INF, 4.1)),
    ("width-zero", (0.1, 0.2), (0.0, 4.1)),
    ("height-zero", (0.1, 0.2), (3.3, 0.0)),
    ("width-negative", (0.1, 0.2), (-3.3, 4.1)),
    ("height-negative", (0.1, 0.2), (3.3, -1e-9)),
    ("both-zero", (0.1, 0.2), (0.0, -0.0)),
]


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("centre", "side"), [pytest.param(c, s, id=i) for i, c, s in BAD_BOXES])
def test_a_degenerate_box_reads_zeros_with_zero_gradients_and_leaves_the_others_alone(
    fn, mode: str, dtype: torch.dtype, centre, side
) -> None:
    images = random_images(2, 2, 9, 10, dtype, seed=1)
    centres, sides = random_boxes(2, 3, 9, 10, centre_span=(-0.9, 0.9), seed=2, dtype=dtype)
    bad_centres, bad_sides = centres.clone(), sides.clone()
    bad_centres[1, 1] = torch.tensor(centre, dtype=dtype)
    bad_sides[1, 1] = torch.tensor(side, dtype=dtype)
    leaves = [t.clone().requires_grad_() for t in (images, bad_centres, bad_sides)]
    out = fn(*leaves, (3, 2), mode)
    grad_output = torch.randn(out.shape, dtype=dtype)
    grads = torch.autograd.grad(out, leaves, grad_output)

    assert torch.equal(out[1, 1], torch.zeros_like(out[1, 1]))
    for grad in grads:
        assert torch.isfinite(grad).all()
    assert torch.equal(grads[1][1, 1], torch.zeros(2, dtype=dtype))
    assert torch.equal(grads[2][1, 1], torch.zeros(2, dtype=dtype))

    # The other boxes, and the image gradient, are those of a call without the bad box.
    keep = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2)]
    good = [t.clone().requires_grad_() for t in (images, centres, sides)]
    expected = fn(*good, (3, 2), mode)
    mask = torch.ones(2, 3, 1, 1, 1, dtype=dtype)
    mask[1, 1] = 0
    expected_grads = torch.autograd.grad(expected, good, grad_output * mask)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for b, k in keep:
        torch.testing.assert_close(out[b, k], expected[b, k], atol=tol, rtol=tol)
        torch.testing.assert_close(grads[1][b, k], expected_grads[1][b, k], atol=tol, rtol=tol)
        torch.testing.assert_close(grads[2][b, k], expected_grads[2][b, k], atol=tol, rtol=tol)
    torch.testing.assert_close(grads[0], expected_grads[0], atol=tol, rtol=tol)


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
def test_degenerate_square_sides_read_zeros(fn, mode: str) -> None:
    images = random_images(1, 2, 8, 8, torch.float64, seed=3)
    centres = torch.zeros(1, 5, 2, dtype=torch.float64, requires_grad=True)
    sides = torch.tensor([[NAN, INF, 0.0, -2.0, 3.7]], dtype=torch.float64, requires_grad=True)
    out = fn(images, centres, sides, 2, mode)
    assert torch.equal(out[0, :4], torch.zeros_like(out[0, :4]))
    assert out[0, 4].abs().sum() > 0
    out.sum().backward()
    assert torch.equal(sides.grad[0, :4], torch.zeros(4, dtype=torch.float64))
    assert torch.isfinite(sides.grad).all() and torch.isfinite(centres.grad).all()


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
def test_whether_a_box_outside_reads_zeros_depends_on_its_own_side(fn, mode: str) -> None:
    """Two squares centred 2.4 px right of an 8 x 8 image of ones: the 1 px one misses the image,
    the 8 px one, [6.4, 14.4) x [0, 8), reads it in its first column of 1.6 px cells only."""
    images = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    centres = torch.tensor([[[1.6, 0.0], [1.6, 0.0]]], dtype=torch.float64)
    sides = torch.tensor([[1.0, 8.0]], dtype=torch.float64)
    out = fn(images, centres, sides, (1, 5), mode)
    expected = torch.tensor([[0.0] * 5, [1.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out[0, :, 0, 0], expected, atol=1e-12, rtol=0)


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
def test_huge_finite_sides_give_finite_values_and_gradients(fn, mode: str) -> None:
    images = random_images(1, 2, 8, 8, torch.float32, seed=4).requires_grad_()
    centres = torch.tensor([[[0.1, -0.2], [0.3, 0.4]]], requires_grad=True)
    sides = torch.tensor([[[1e30, 3.0], [2e38, 3e38]]], requires_grad=True)
    out = fn(images, centres, sides, (2, 3), mode)
    assert torch.isfinite(out).all()
    for grad in torch.autograd.grad(out.sum(), (images, centres, sides)):
        assert torch.isfinite(grad).all()


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("batch", "count"), [(2, 0), (0, 3), (0, 0)])
@pytest.mark.parametrize("square", [True, False])
def test_no_boxes_or_no_images_give_an_empty_output_and_empty_gradients(
    fn, mode: str, batch: int, count: int, square: bool
) -> None:
    images = torch.randn(batch, 3, 8, 9, requires_grad=True)
    centres = torch.zeros(batch, count, 2, requires_grad=True)
    sides = torch.ones((batch, count) if square else (batch, count, 2), requires_grad=True)
    out = fn(images, centres, sides, (4, 5), mode)
    assert out.shape == (batch, count, 3, 4, 5)
    assert out.dtype == images.dtype
    out.sum().backward()
    assert images.grad.shape == images.shape and torch.equal(images.grad, torch.zeros_like(images))
    assert centres.grad.shape == centres.shape
    assert sides.grad.shape == sides.shape
