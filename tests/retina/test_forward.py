"""Forward pass of ``gdram_ext.retina_glimpse``: its values against the oracles.

Oracles, from the most independent to the least:

* bilinear: per-scale ``F.affine_grid`` + ``F.grid_sample`` + ``torch.cat``, written here;
* area: crop of the zero-padded image + ``F.avg_pool2d`` where every square lies on the pixel
  grid, written here;
* both modes, everywhere: ``gdram_ext.reference.retina_glimpse`` (pure PyTorch).

Dtypes, layouts, the module and edge cases: ``test_forward_inputs.py``.
"""

from __future__ import annotations

import pytest
import torch
from forward_cases import (
    HYPOTHESIS,
    crop_pool_oracle,
    glimpse_cases,
    grid_sample_oracle,
    hyper,
    random_images,
    with_layout,
)
from hypothesis import given
from hypothesis import strategies as st

from gdram_ext import MODES, reference, retina_glimpse

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
