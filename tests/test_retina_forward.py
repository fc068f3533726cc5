"""Forward pass of ``gdram_ext.retina_glimpse``: values, layouts, dtypes and edge cases.

Oracles, from the most independent to the least:

* bilinear: per-scale ``F.affine_grid`` + ``F.grid_sample`` + ``torch.cat``, written here;
* area: crop of the zero-padded image + ``F.avg_pool2d`` where every square lies on the pixel
  grid, written here;
* both modes, everywhere: ``gdram_ext.reference.retina_glimpse`` (pure PyTorch).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdram_ext
from gdram_ext import MODES, RetinaGlimpse, reference, retina_glimpse

LAYOUTS = ("contiguous", "channels_last", "transposed", "strided", "expanded")
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def with_layout(images: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``images`` with other strides (``expanded`` repeats channel 0)."""
    batch, channels, height, width = images.shape
    if layout == "contiguous":
        return images.contiguous()
    if layout == "channels_last":
        return images.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":  # W-major planes: stride_w > stride_h
        return images.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "strided":  # a view with gaps in every dimension
        big = images.new_zeros(batch, 2 * channels, 2 * height, 3 * width)
        big[:, ::2, ::2, ::3] = images
        return big[:, ::2, ::2, ::3]
    if layout == "expanded":  # stride 0 along the channels
        return images[:, :1].expand(batch, channels, height, width)
    raise AssertionError(layout)


def grid_sample_oracle(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int,
    num_scales: int,
    scale_factor: float,
    base_size: float | None,
) -> torch.Tensor:
    """The bilinear contract, literally: one affine_grid + grid_sample per scale, then cat."""
    batch, channels, height, width = images.shape
    base = float(size) if base_size is None else float(base_size)
    scales = []
    for i in range(num_scales):
        side = base * scale_factor**i
        theta = images.new_zeros(batch, 2, 3)
        theta[:, 0, 0] = side / width
        theta[:, 0, 2] = locations[:, 0].to(images.dtype)
        theta[:, 1, 1] = side / height
        theta[:, 1, 2] = locations[:, 1].to(images.dtype)
        grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
        scales.append(F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    return torch.cat(scales, dim=1)


def crop_pool_oracle(
    images: torch.Tensor, centres: list[tuple[int, int]], size: int, num_scales: int, cell: int, factor: int
) -> torch.Tensor:
    """Area contract where it is plain pooling: crop the zero-padded image, then avg_pool2d.

    ``centres``: integer pixel centre (cx, cy) of every sample; scale i has integer cells of
    ``cell * factor**i`` pixels and ``size * cell * factor**i`` must be even, so every square's
    edges fall on pixel boundaries.
    """
    _, _, height, width = images.shape
    samples = []
    for b, (cx, cy) in enumerate(centres):
        scales = []
        for i in range(num_scales):
            cell_i = cell * factor**i
            side = size * cell_i
            assert side % 2 == 0
            left, top = cx - side // 2, cy - side // 2
            pad = side + abs(cx) + abs(cy) + height + width
            padded = F.pad(images[b], (pad, pad, pad, pad))
            crop = padded[:, top + pad : top + pad + side, left + pad : left + pad + side]
            scales.append(F.avg_pool2d(crop[None], kernel_size=cell_i)[0])
        samples.append(torch.cat(scales, dim=0))
    return torch.stack(samples)


def random_images(batch: int, channels: int, height: int, width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64).to(dtype)


# Locations inside, exactly at and beyond the border, and far outside.
location_values = st.one_of(
    st.sampled_from([-1.0, 1.0, 0.0, -1.25, 1.25]),
    st.floats(-1.6, 1.6, allow_nan=False, allow_infinity=False),
)


@st.composite
def glimpse_cases(draw: st.DrawFn, max_extent: int = 20) -> dict:
    batch = draw(st.integers(1, 3))
    case = {
        "shape": (batch, draw(st.integers(1, 3)), draw(st.integers(1, max_extent)), draw(st.integers(1, max_extent))),
        "locations": draw(st.lists(st.tuples(location_values, location_values), min_size=batch, max_size=batch)),
        "size": draw(st.integers(1, 6)),
        "num_scales": draw(st.integers(1, 3)),
        "scale_factor": draw(st.one_of(st.sampled_from([1.0, 1.5, 2.0, 3.0]), st.floats(0.5, 3.0))),
        "base_size": draw(st.one_of(st.none(), st.sampled_from([1.0, 2.5, 7.0]), st.floats(0.25, 12.0))),
        "mode": draw(st.sampled_from(MODES)),
        "layout": draw(st.sampled_from(LAYOUTS)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }
    return case


def hyper(case: dict) -> dict:
    return {k: case[k] for k in ("size", "num_scales", "scale_factor", "base_size")}


# ----------------------------------------------------------------------------------------------
# Agreement with the oracles
# ----------------------------------------------------------------------------------------------


@HYPOTHESIS
@given(case=glimpse_cases())
def test_forward_equals_reference_in_float64(case: dict) -> None:
    images = with_layout(random_images(*case["shape"], torch.float64, case["seed"]), case["layout"])
    locations = torch.tensor(case["locations"], dtype=torch.float64)
    out = retina_glimpse(images, locations, mode=case["mode"], **hyper(case))
    expected = reference.retina_glimpse(images.contiguous(), locations, mode=case["mode"], **hyper(case))
    batch, channels = case["shape"][:2]
    assert out.shape == (batch, case["num_scales"] * channels, case["size"], case["size"])
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


@HYPOTHESIS
@given(case=glimpse_cases())
def test_bilinear_mode_equals_per_scale_affine_grid_and_grid_sample(case: dict) -> None:
    images = with_layout(random_images(*case["shape"], torch.float64, case["seed"]), case["layout"])
    locations = torch.tensor(case["locations"], dtype=torch.float64)
    out = retina_glimpse(images, locations, mode="bilinear", **hyper(case))
    expected = grid_sample_oracle(images.contiguous(), locations, **hyper(case))
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    ("shape", "locations", "size", "num_scales", "scale_factor", "base_size"),
    [
        ((2, 3, 32, 32), [[0.0, 0.0], [0.3, -0.7]], 12, 4, 2.0, None),  # the documented defaults
        ((1, 1, 9, 17), [[-1.0, -1.0]], 4, 3, 1.5, None),  # top-left corner, H != W
        ((1, 2, 17, 9), [[1.0, 1.0]], 5, 2, 1.5, 3.0),  # bottom-right corner, odd size
        ((3, 1, 10, 14), [[1.3, 0.0], [0.0, -1.8], [-3.0, 4.0]], 4, 3, 2.0, 2.0),  # beyond the border
        ((1, 1, 1, 1), [[0.0, 0.0]], 3, 2, 2.0, 0.5),  # a single pixel
        ((1, 1, 12, 8), [[0.1, -0.2]], 6, 2, 0.5, 16.0),  # shrinking scales
        ((2, 1, 7, 11), [[0.25, 0.5], [-0.5, 0.9]], 1, 3, 2.5, None),  # one cell per scale
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_forward_equals_reference_on_fixed_cases(
    shape: tuple[int, int, int, int],
    locations: list[list[float]],
    size: int,
    num_scales: int,
    scale_factor: float,
    base_size: float | None,
    mode: str,
) -> None:
    images = torch.randn(shape, dtype=torch.float64)
    loc = torch.tensor(locations, dtype=torch.float64)
    args = (size, num_scales, scale_factor, mode, base_size)
    out = retina_glimpse(images, loc, *args)
    torch.testing.assert_close(out, reference.retina_glimpse(images, loc, *args), atol=1e-10, rtol=1e-10)
    if mode == "bilinear":
        expected = grid_sample_oracle(images, loc, size, num_scales, scale_factor, base_size)
        torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


def test_forward_uses_documented_defaults() -> None:
    images = torch.randn(2, 3, 40, 30, dtype=torch.float64)
    locations = torch.tensor([[0.1, -0.3], [-0.6, 0.8]], dtype=torch.float64)
    out = retina_glimpse(images, locations)
    assert out.shape == (2, 4 * 3, 12, 12)
    expected = grid_sample_oracle(images, locations, size=12, num_scales=4, scale_factor=2.0, base_size=None)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


def test_output_is_scale_major() -> None:
    """Channels [i*C, (i+1)*C) of the output are scale i alone (a single-scale call with its side)."""
    images = torch.randn(2, 3, 20, 24, dtype=torch.float64)
    locations = torch.tensor([[0.2, -0.1], [-0.4, 0.5]], dtype=torch.float64)
    for mode in MODES:
        out = retina_glimpse(images, locations, size=5, num_scales=3, scale_factor=1.5, mode=mode, base_size=4.0)
        for i in range(3):
            alone = retina_glimpse(images, locations, size=5, num_scales=1, mode=mode, base_size=4.0 * 1.5**i)
            torch.testing.assert_close(out[:, 3 * i : 3 * (i + 1)], alone, atol=1e-12, rtol=1e-12)


@st.composite
def aligned_cases(draw: st.DrawFn) -> dict:
    size = draw(st.integers(1, 4))
    cell = draw(st.integers(1, 3))
    if (size * cell) % 2:  # the squares' half side must be a whole number of pixels
        cell *= 2
    batch = draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    centre = st.tuples(st.integers(-6, width + 6), st.integers(-6, height + 6))
    return {
        "shape": (batch, draw(st.integers(1, 2)), height, width),
        "centres": draw(st.lists(centre, min_size=batch, max_size=batch)),
        "size": size,
        "cell": cell,
        "num_scales": draw(st.integers(1, 3)),
        "factor": draw(st.sampled_from([1, 2, 3])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@HYPOTHESIS
@given(case=aligned_cases())
def test_area_mode_equals_avg_pool_on_pixel_aligned_squares(case: dict) -> None:
    images = random_images(*case["shape"], torch.float64, case["seed"])
    height, width = case["shape"][2:]
    # Integer pixel centre (cx, cy) -> normalised (x, y), inverting cx = (x + 1) / 2 * W.
    centres = [[2 * cx / width - 1, 2 * cy / height - 1] for cx, cy in case["centres"]]
    locations = torch.tensor(centres, dtype=torch.float64)
    size, cell, num_scales, factor = case["size"], case["cell"], case["num_scales"], case["factor"]
    out = retina_glimpse(images, locations, size, num_scales, float(factor), "area", float(size * cell))
    expected = crop_pool_oracle(images, case["centres"], size, num_scales, cell, factor)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


@HYPOTHESIS
@given(case=aligned_cases())
def test_area_mode_weights_fractional_pixels_exactly_on_quarter_pixel_squares(case: dict) -> None:
    """Fractional coverage, checked independently of the reference: with square edges on
    quarter pixels, the image upsampled 4x by repetition (still piecewise constant) puts them
    on its pixel grid, where crop + avg_pool2d is the exact mean over each cell."""
    images = random_images(*case["shape"], torch.float64, case["seed"])
    height, width = case["shape"][2:]
    upsampled = images.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    # The drawn integers are read in quarter pixels: centres, cell sides (size * cell stays even).
    centres = [(cx + 1, cy - 1) for cx, cy in case["centres"]]  # off the whole-pixel grid
    quarter = [[2 * (cx / 4) / width - 1, 2 * (cy / 4) / height - 1] for cx, cy in centres]
    locations = torch.tensor(quarter, dtype=torch.float64)
    size, cell, num_scales, factor = case["size"], case["cell"], case["num_scales"], case["factor"]
    out = retina_glimpse(images, locations, size, num_scales, float(factor), "area", size * cell / 4)
    expected = crop_pool_oracle(upsampled, centres, size, num_scales, cell, factor)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


def test_area_mode_of_one_cell_covering_the_image_is_the_image_mean() -> None:
    images = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    locations = torch.zeros(2, 2, dtype=torch.float64)
    # A 20-pixel square centred on a 6 x 10 image: the mean over the square, zeros outside.
    out = retina_glimpse(images, locations, size=1, num_scales=1, mode="area", base_size=20.0)
    expected = images.sum(dim=(2, 3), keepdim=True) / 400.0
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


def test_area_mode_weights_partially_covered_pixels_by_their_covered_fraction() -> None:
    """A 1.5-pixel cell starting at pixel 0.5 covers half of pixel 0 and all of pixel 1 on each axis."""
    image = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    # Cell [0.5, 2.0) on both axes: centre 1.25 px -> x = 2 * 1.25 / 4 - 1.
    location = torch.tensor([[2 * 1.25 / 4 - 1, 2 * 1.25 / 4 - 1]], dtype=torch.float64)
    out = retina_glimpse(image, location, size=1, num_scales=1, mode="area", base_size=1.5)
    weights = torch.tensor([0.5, 1.0, 0.0, 0.0], dtype=torch.float64)
    expected = (weights[:, None] * weights[None, :] * image[0, 0]).sum() / 1.5**2
    torch.testing.assert_close(out.reshape(()), expected, atol=1e-12, rtol=1e-12)


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
