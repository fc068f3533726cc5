"""Property tests: the public ``box_glimpse`` equals the pure-PyTorch reference (itself checked
against independent oracles in ``test_box_forward_matches_oracles.py``) over random shapes,
boxes, sizes, modes, dtypes and memory layouts, forward and backward.
"""

from __future__ import annotations

import pytest
import torch
from box_test_cases import (
    HYPOTHESIS,
    LAYOUTS,
    TOLERANCES,
    box_cases,
    output_size,
    random_boxes,
    random_images,
    with_layout,
)
from hypothesis import given
from hypothesis import strategies as st

from gdram_ext import MODES, box_glimpse, reference


@HYPOTHESIS
@given(case=box_cases(), dtype=st.sampled_from(list(TOLERANCES)))
def test_forward_equals_the_float64_reference_on_random_cases(case: dict, dtype: torch.dtype) -> None:
    images = with_layout(random_images(*case["shape"], dtype, case["seed"]), case["layout"])
    centres, sides = case["centres"].to(dtype), case["sides"].to(dtype)
    out = box_glimpse(images, centres, sides, case["size"], case["mode"])
    batch, channels = case["shape"][:2]
    assert out.shape == (batch, centres.shape[1], channels, *output_size(case["size"]))
    assert out.dtype == dtype
    # The reference sees exactly the rounded inputs that the operator saw, in float64.
    expected = reference.box_glimpse(images.double(), centres.double(), sides.double(), case["size"], case["mode"])
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)


def forward_backward(fn, images, centres, sides, size, mode, grad_output):
    """(output, d images, d centres, d sides) for fresh leaves viewing the inputs (detach keeps the strides)."""
    leaves = [t.detach().requires_grad_() for t in (images, centres, sides)]
    out = fn(*leaves, size, mode)
    return (out, *torch.autograd.grad(out, leaves, grad_output.to(out.dtype)))


@HYPOTHESIS
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 16), st.integers(1, 16)),
    count=st.integers(1, 4),
    size=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    square=st.booleans(),
    span=st.sampled_from([(-1.0, 1.0), (-1.5, 1.5), (0.7, 1.2)]),
    mode=st.sampled_from(MODES),
    layout=st.sampled_from(LAYOUTS),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    seed=st.integers(0, 2**31 - 1),
)
def test_backward_equals_the_reference_autograd_on_random_cases(
    shape, count, size, square, span, mode, layout, dtype, seed
) -> None:
    """Random (never round) centres and sides: no cell edge or sample point on a pixel boundary."""
    images = with_layout(random_images(*shape, dtype, seed), layout)
    centres, sides = random_boxes(
        shape[0], count, shape[2], shape[3], centre_span=span, side_span=(0.4, 18.0), square=square, seed=seed
    )
    centres, sides = centres.to(dtype), sides.to(dtype)
    grad_output = torch.randn(shape[0], count, shape[1], *size, dtype=torch.float64)
    got = forward_backward(box_glimpse, images, centres, sides, size, mode, grad_output)
    expected = forward_backward(
        reference.box_glimpse, images.double(), centres.double(), sides.double(), size, mode, grad_output
    )
    tol = TOLERANCES[dtype]
    for name, a, b in zip(("output", "images", "centres", "sides"), got, expected, strict=True):
        assert a.dtype == dtype and a.shape == b.shape, name
        # A box's gradient sums many terms of both signs: its error is relative to the largest.
        scale = max(b.abs().max().item(), 1.0) if name in ("centres", "sides") else 1.0
        torch.testing.assert_close(a.double(), b, atol=tol * scale, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_half_precision_forward_and_backward_are_close_to_float32(dtype: torch.dtype, mode: str) -> None:
    images = random_images(2, 3, 23, 19, torch.float32, seed=1)
    centres, sides = random_boxes(2, 3, 23, 19, centre_span=(-1.2, 1.2), side_span=(2.0, 15.0), seed=2)
    grad_output = torch.randn(2, 3, 3, 4, 5, dtype=torch.float64)
    # Both see the same rounded values: only the arithmetic's precision differs.
    images, centres, sides = images.to(dtype), centres.to(dtype), sides.to(dtype)
    half = forward_backward(box_glimpse, images, centres, sides, (4, 5), mode, grad_output)
    single = forward_backward(box_glimpse, images.float(), centres.float(), sides.float(), (4, 5), mode, grad_output)
    tol = TOLERANCES[dtype]
    for a, b in zip(half, single, strict=True):
        assert a.dtype == dtype
        scale = max(b.abs().max().item(), 1.0)
        torch.testing.assert_close(a.float(), b, atol=4 * tol * scale, rtol=4 * tol)


@pytest.mark.parametrize("mode", MODES)
def test_centres_and_sides_of_other_floating_dtypes_than_the_images_are_accepted(mode: str) -> None:
    images = random_images(2, 2, 12, 10, torch.float32, seed=3)
    centres, sides = random_boxes(2, 2, 12, 10, seed=4)
    expected = box_glimpse(images, centres.float(), sides.float(), 3, mode)
    for centres_dtype, sides_dtype in [(torch.float64, torch.float32), (torch.float32, torch.float16)]:
        got = box_glimpse(images, centres.to(centres_dtype), sides.to(sides_dtype), 3, mode)
        assert got.dtype == torch.float32
        reference_got = reference.box_glimpse(images, centres.to(centres_dtype), sides.to(sides_dtype), 3, mode)
        torch.testing.assert_close(got, reference_got, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        box_glimpse(images, centres.double(), sides.double(), 3, mode), expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("mode", MODES)
def test_expanded_and_broadcast_inputs_are_read_correctly(mode: str) -> None:
    """Stride-0 views (one centre and side shared by all boxes, one image plane for all channels)."""
    plane = random_images(2, 1, 11, 13, torch.float64, seed=5)
    images = plane.expand(2, 3, 11, 13)
    centres = torch.tensor([0.1, -0.2], dtype=torch.float64).expand(2, 4, 2)
    sides = torch.tensor([3.3, 5.1], dtype=torch.float64).expand(2, 4, 2)
    out = box_glimpse(images, centres, sides, (2, 3), mode)
    expected = reference.box_glimpse(images.contiguous(), centres.contiguous(), sides.contiguous(), (2, 3), mode)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out, out[:, :1, :1].expand_as(out), atol=0, rtol=0)


def test_boxes_of_one_image_do_not_depend_on_each_other() -> None:
    """Each box's glimpse equals a call with that box alone (no mixing across boxes or samples)."""
    images = random_images(2, 2, 14, 9, torch.float64, seed=6)
    centres, sides = random_boxes(2, 5, 14, 9, centre_span=(-1.3, 1.3), side_span=(0.5, 12.0), seed=7)
    for mode in MODES:
        together = box_glimpse(images, centres, sides, (3, 2), mode)
        for b in range(2):
            for k in range(5):
                one = (images[b : b + 1], centres[b : b + 1, k : k + 1], sides[b : b + 1, k : k + 1])
                alone = box_glimpse(*one, (3, 2), mode)
                torch.testing.assert_close(together[b, k], alone[0, 0], atol=1e-13, rtol=1e-13)
