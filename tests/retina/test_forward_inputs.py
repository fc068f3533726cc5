"""Forward pass of ``gdram_ext.retina_glimpse``: dtypes, layouts, continuity, the module and edge cases.

The values themselves are checked against the oracles in ``test_forward.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from forward_cases import (
    HYPOTHESIS,
    LAYOUTS,
    glimpse_cases,
    grid_sample_oracle,
    hyper,
    random_images,
    with_layout,
)
from hypothesis import given
from hypothesis import strategies as st

import gdram_ext
from gdram_ext import MODES, RetinaGlimpse, reference, retina_glimpse

# ----------------------------------------------------------------------------------------------
# Dtypes
# ----------------------------------------------------------------------------------------------

# |got - float64 reference| <= atol + rtol * |reference|: float32 as promised; half precision
# formats about one rounding of the result (2^-11 for float16, 2^-8 for bfloat16) plus slack,
# since their kernels accumulate in float32.
TOLERANCES = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


@HYPOTHESIS
@given(
    case=glimpse_cases(max_extent=40),
    size=st.integers(1, 19),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_reduced_precision_forward_matches_float64_reference_on_random_cases(
    case: dict, size: int, dtype: torch.dtype
) -> None:
    """Vectorised float32 rows take 8 cells (AVX2), then 4 (SSE), then the rest: sizes up to 19 here."""
    images = with_layout(random_images(*case["shape"], dtype, case["seed"]), case["layout"])
    locations = torch.tensor(case["locations"], dtype=torch.float32)
    kwargs = {**hyper(case), "size": size, "mode": case["mode"]}
    out = retina_glimpse(images, locations, **kwargs)
    assert out.dtype == dtype
    expected = reference.retina_glimpse(images.double(), locations.double(), **kwargs)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("mode", MODES)
def test_forward_of_every_dtype_matches_float64_reference_within_its_precision(dtype: torch.dtype, mode: str) -> None:
    images = torch.randn(3, 2, 23, 19).to(dtype)
    locations = torch.tensor([[0.1, -0.2], [0.95, -1.0], [-1.3, 0.4]]).to(dtype)
    args = (6, 3, 1.5, mode, 5.0)
    out = retina_glimpse(images, locations, *args)
    assert out.dtype == dtype
    # The reference sees exactly the rounded inputs that the operator saw, in float64.
    expected = reference.retina_glimpse(images.double(), locations.double(), *args)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("mode", MODES)
def test_float32_forward_on_a_large_image_is_accurate_to_1e_5(mode: str) -> None:
    """Coordinates are computed in double, so large images keep float32 accuracy near their edges."""
    images = torch.rand(2, 1, 700, 900)
    locations = torch.tensor([[0.99731, -0.99517], [-0.3331, 0.71113]])
    args = (8, 4, 2.0, mode, 13.0)
    out = retina_glimpse(images, locations, *args)
    expected = reference.retina_glimpse(images.double(), locations.double(), *args)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_tap_outside_the_image_ignores_the_non_finite_pixel_beside_the_border_pixel(side: str) -> None:
    # Vectorised rows read a border cell's taps as the pair (pixel 0, pixel 1) or (W - 2, W - 1)
    # and mask the one outside the image: an inf in the other pixel of the pair must not leak.
    images = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    images[..., 1 if side == "left" else 4] = math.inf
    x = -0.9333 if side == "left" else 0.9333  # the glimpse's left (right) cells straddle the border
    locations = torch.tensor([[x, 0.0]])
    out = retina_glimpse(images.float(), locations, 4, 1, 2.0, "bilinear", 4.0)
    expected = grid_sample_oracle(images, locations.double(), 4, 1, 2.0, 4.0)
    border = slice(0, 2) if side == "left" else slice(2, 4)
    assert torch.isfinite(out[..., border]).all()
    torch.testing.assert_close(out[..., border].double(), expected[..., border], atol=1e-6, rtol=1e-6)


def test_float32_bilinear_of_whole_pixel_cells_matches_grid_sample_computed_in_float64() -> None:
    # The paper's retina: cells of 1, 2, 4 and 8 pixels, 16 per row (contiguous vector loads for
    # 1- and 2-pixel cells inside the image), glimpses inside the image and across its borders.
    images = torch.randn(3, 3, 70, 90)
    locations = torch.tensor([[0.05, -0.1], [-0.8, 0.9], [0.97, -0.99]])
    out = retina_glimpse(images, locations, 16, 4, 2.0, "bilinear")
    expected = grid_sample_oracle(images.double(), locations.double(), 16, 4, 2.0, 16.0)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_float32_bilinear_matches_grid_sample_computed_in_float64() -> None:
    # grid_sample in float32 computes its coordinates in float32 (errors growing with the image
    # size), so the oracle runs in float64 on the same float32-rounded inputs.
    images = torch.randn(2, 3, 64, 48)
    locations = torch.tensor([[0.41, -0.93], [-1.0, 1.0]])
    out = retina_glimpse(images, locations, 7, 3, 1.5, "bilinear", 6.0)
    expected = grid_sample_oracle(images.double(), locations.double(), 7, 3, 1.5, 6.0)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("image_dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("location_dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_output_dtype_is_the_images_dtype_whatever_the_locations_dtype(
    image_dtype: torch.dtype, location_dtype: torch.dtype, mode: str
) -> None:
    images = torch.randn(2, 2, 9, 8).to(image_dtype)
    locations = torch.tensor([[0.25, -0.5], [0.5, 0.75]], dtype=location_dtype)  # exact in every dtype
    out = retina_glimpse(images, locations, 4, 2, 2.0, mode)
    assert out.dtype == image_dtype
    assert out.shape == (2, 4, 4, 4)
    # Locations are only coordinates: their dtype does not change the result.
    same = retina_glimpse(images, locations.double(), 4, 2, 2.0, mode)
    torch.testing.assert_close(out, same, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_images_give_the_same_result_as_contiguous(layout: str, dtype: torch.dtype, mode: str) -> None:
    images = with_layout(torch.randn(2, 3, 13, 10).to(dtype), layout)
    locations = torch.tensor([[0.3, -0.2], [-0.9, 1.1]])
    out = retina_glimpse(images, locations, 5, 3, 1.5, mode, 4.0)
    expected = retina_glimpse(images.contiguous(), locations, 5, 3, 1.5, mode, 4.0)
    assert out.is_contiguous()
    # The same sums, possibly in another order (vectorised paths need unit strides): equal to
    # within a couple of roundings of the dtype.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out, expected, atol=2 * eps, rtol=2 * eps)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("mode", MODES)
def test_channels_last_of_any_channel_count_equals_contiguous_up_to_the_last_pixel(channels: int, mode: str) -> None:
    # The glimpses reach the last pixel of the last sample, where a channels_last pixel's
    # channels end the tensor's storage, and cross every border.
    images = torch.randn(3, channels, 9, 11)
    locations = torch.tensor([[-0.95, -0.9], [0.1, 0.2], [0.97, 0.95]])
    out = retina_glimpse(images.contiguous(memory_format=torch.channels_last), locations, 4, 3, 2.0, mode, 3.0)
    expected = retina_glimpse(images, locations, 4, 3, 2.0, mode, 3.0)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_locations_give_the_same_result_as_contiguous(mode: str) -> None:
    images = torch.randn(3, 2, 11, 12, dtype=torch.float64)
    locations = torch.rand(2, 3, dtype=torch.float64) * 2 - 1  # (2, B): the transpose is a (B, 2) view
    out = retina_glimpse(images, locations.t(), 4, 2, 2.0, mode)
    expected = retina_glimpse(images, locations.t().contiguous(), 4, 2, 2.0, mode)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------
# Continuity, module, edge cases
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift_axis", [0, 1])
def test_area_mode_output_moves_continuously_with_the_location(shift_axis: int) -> None:
    """Cell edges exactly on pixel boundaries, then moved by a hair: the output moves by a hair.

    Every cell's mean is Lipschitz in its position: moving an edge by t pixels changes it by at
    most 2 * max|image| * t / cell. A method snapping cells to pixels would jump by O(1) here.
    """
    height, width = 16, 20
    images = torch.randn(2, 2, height, width, dtype=torch.float64)
    # Centre (10, 8) pixels, 2-pixel cells: every edge of every scale lies on a pixel boundary.
    aligned = torch.tensor([[2 * 10 / width - 1, 2 * 8 / height - 1], [0.0, 0.0]], dtype=torch.float64)
    eps = 1e-9
    extent = width if shift_axis == 0 else height
    shift_pixels = eps * extent / 2
    bound = 2 * images.abs().max().item() * shift_pixels / 2.0 + 1e-12
    out = retina_glimpse(images, aligned, 4, 3, 2.0, "area", 8.0)
    for sign in (-1.0, 1.0):
        moved = aligned.clone()
        moved[:, shift_axis] += sign * eps
        change = (retina_glimpse(images, moved, 4, 3, 2.0, "area", 8.0) - out).abs().max().item()
        assert change <= bound
    # A larger move does change the output: the test above is not vacuous.
    moved = aligned.clone()
    moved[:, shift_axis] += 0.25
    assert (retina_glimpse(images, moved, 4, 3, 2.0, "area", 8.0) - out).abs().max().item() > 1e-3


def test_area_mode_is_continuous_along_a_sweep_of_locations() -> None:
    """Sweep a location across many pixel boundaries in tiny steps: no step makes a jump."""
    images = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    xs = torch.linspace(-0.5, 0.5, 2001, dtype=torch.float64)
    locations = torch.stack([xs, torch.full_like(xs, 0.1)], dim=1)
    out = retina_glimpse(images.expand(len(xs), -1, -1, -1), locations, 3, 2, 2.0, "area", 3.0)
    step_pixels = (xs[1] - xs[0]).item() * 12 / 2
    smallest_cell = 1.0
    bound = 2 * images.abs().max().item() * step_pixels / smallest_cell * (1 + 1e-9)
    assert (out[1:] - out[:-1]).abs().max().item() <= bound


@pytest.mark.parametrize("mode", MODES)
def test_retina_glimpse_module_equals_the_function(mode: str) -> None:
    module = RetinaGlimpse(size=5, num_scales=3, scale_factor=1.5, mode=mode, base_size=3.0)
    images = torch.randn(2, 3, 15, 17, dtype=torch.float64)
    locations = torch.tensor([[0.2, 0.4], [-0.7, -1.1]], dtype=torch.float64)
    expected = retina_glimpse(images, locations, 5, 3, 1.5, mode, 3.0)
    torch.testing.assert_close(module(images, locations), expected, atol=0, rtol=0)
    assert list(module.parameters()) == []
    for text in ("size=5", "num_scales=3", "scale_factor=1.5", repr(mode), "base_size=3.0"):
        assert text in repr(module)


def test_retina_glimpse_module_defaults_match_the_function_defaults() -> None:
    images = torch.randn(1, 1, 30, 30, dtype=torch.float64)
    locations = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    torch.testing.assert_close(RetinaGlimpse()(images, locations), retina_glimpse(images, locations), atol=0, rtol=0)


def test_package_exports_the_documented_api() -> None:
    assert gdram_ext.retina_glimpse is retina_glimpse
    assert gdram_ext.RetinaGlimpse is RetinaGlimpse
    assert gdram_ext.reference.retina_glimpse is reference.retina_glimpse


@pytest.mark.parametrize("mode", MODES)
def test_empty_batch_returns_an_empty_glimpse(device: torch.device, mode: str) -> None:
    images = torch.randn(0, 3, 8, 9, device=device)
    locations = torch.zeros(0, 2, device=device)
    out = retina_glimpse(images, locations, 5, 2, 2.0, mode)
    assert out.shape == (0, 6, 5, 5)
    assert out.dtype == images.dtype
    assert out.device == images.device


NON_FINITE = [math.nan, math.inf, -math.inf, 1e30, -1e30]


@pytest.mark.parametrize("bad", NON_FINITE)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
def test_non_finite_or_huge_location_gives_zeros_for_that_sample_only(
    device: torch.device, bad: float, axis: int, dtype: torch.dtype, mode: str
) -> None:
    images = torch.randn(3, 2, 10, 13, dtype=dtype, device=device)
    locations = torch.tensor([[0.1, -0.3], [0.2, 0.2], [-0.5, 0.9]], dtype=dtype, device=device)
    locations[1, axis] = bad
    out = retina_glimpse(images, locations, 4, 3, 2.0, mode)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    for b in (0, 2):
        alone = retina_glimpse(images[b : b + 1], locations[b : b + 1], 4, 3, 2.0, mode)
        torch.testing.assert_close(out[b : b + 1], alone, atol=0, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_glimpse_far_outside_the_image_is_zero(mode: str) -> None:
    images = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    # The largest square (12 * 2 = 24 pixels) reaches 12 pixels = 3 normalised units from its centre.
    locations = torch.tensor([[4.2, 0.0], [0.0, -4.2]], dtype=torch.float64)
    out = retina_glimpse(images, locations, 6, 2, 2.0, mode)
    assert torch.equal(out, torch.zeros_like(out))
