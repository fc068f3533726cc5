"""Forward values of ``box_glimpse`` against independent oracles: hand-computed answers,
``torchvision.ops.roi_align``, one ``affine_grid`` + ``grid_sample`` per box, and a brute-force
double loop over pixels for the area mean. Both the public operator and the reference are checked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from box_test_cases import (
    HYPOTHESIS,
    affine_grid_oracle,
    brute_force_area,
    output_size,
    random_boxes,
    random_images,
    to_normalised,
    widths_heights,
)
from hypothesis import given
from hypothesis import strategies as st
from torchvision.ops import roi_align

from gdram_ext import MODES, box_glimpse, reference

FUNCTIONS = pytest.mark.parametrize("fn", [box_glimpse, reference.box_glimpse], ids=["operator", "reference"])


def ramp(height: int = 4, width: int = 4) -> torch.Tensor:
    """(1, 1, H, W) image whose pixel (row y, column x) holds 10 y + x + 1: linear, so a bilinear
    sample and a cell's mean are easy to compute by hand."""
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    columns = torch.arange(width, dtype=torch.float64)
    return (10 * rows + columns + 1)[None, None]


# ----------------------------------------------------------------------------------------------
# Hand-computed answers on a 4 x 4 ramp
# ----------------------------------------------------------------------------------------------

# (id, centre in pixels (cx, cy), sides (B, K) or (B, K, 2) value, size, mode, expected (h, w) values)
HAND_CASES = [
    # Box [0.5, 3.5)^2 in 2 x 2 cells of 1.5 px. Bilinear samples at pixel coordinates 1.25 and
    # 2.75, i.e. pixel-centre indices 0.75 and 2.25: 10 * 0.75 + 0.75 + 1 = 9.25, and so on.
    ("square-bilinear", (2.0, 2.0), 3.0, 2, "bilinear", [[9.25, 10.75], [24.25, 25.75]]),
    # Area: cell [0.5, 2) covers half of pixel 0 and all of pixel 1, mean index (0.5 * 0 + 1) / 1.5 = 2/3;
    # cell [2, 3.5) covers pixel 2 and half of pixel 3, mean index (2 + 1.5) / 1.5 = 7/3.
    ("square-area", (2.0, 2.0), 3.0, 2, "area", [[22 / 3 + 1, 10], [25, 77 / 3 + 1]]),
    # A 4 x 2 rectangle [0, 4) x [1, 3) in 1 row of 2 columns: cells [0, 2) x [1, 3) and [2, 4) x [1, 3).
    ("rectangle-bilinear", (2.0, 2.0), (4.0, 2.0), (1, 2), "bilinear", [[16.5, 18.5]]),
    ("rectangle-area", (2.0, 2.0), (4.0, 2.0), (1, 2), "area", [[16.5, 18.5]]),
    # Centred on the top-left corner, 2 x 2 px, one cell: a quarter of the cell is pixel (0, 0) (value 1),
    # the rest is zero padding; the bilinear sample at the corner weighs pixel (0, 0) by 1/2 * 1/2.
    ("corner-bilinear", (0.0, 0.0), 2.0, 1, "bilinear", [[0.25]]),
    ("corner-area", (0.0, 0.0), 2.0, 1, "area", [[0.25]]),
    # Entirely outside (right of the image by more than a pixel): zeros.
    ("outside-bilinear", (6.5, 2.0), 2.0, 2, "bilinear", [[0.0, 0.0], [0.0, 0.0]]),
    ("outside-area", (6.5, 2.0), 2.0, 2, "area", [[0.0, 0.0], [0.0, 0.0]]),
]


@FUNCTIONS
@pytest.mark.parametrize(
    ("centre", "side", "size", "mode", "expected"), [pytest.param(*case[1:], id=case[0]) for case in HAND_CASES]
)
def test_one_box_on_a_ramp_gives_the_hand_computed_values(fn, centre, side, size, mode, expected) -> None:
    images = ramp()
    centres = to_normalised(torch.tensor([[centre]], dtype=torch.float64), 4, 4)
    sides = torch.tensor([[side]], dtype=torch.float64)
    out = fn(images, centres, sides, size, mode)
    h, w = output_size(size)
    assert out.shape == (1, 1, 1, h, w)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Bilinear: roi_align (inside the image) and affine_grid + grid_sample (anywhere)
# ----------------------------------------------------------------------------------------------


def roi_align_oracle(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, h: int, w: int):
    """``roi_align(aligned=True, sampling_ratio=1)``: one bilinear sample at each bin's centre.

    With ``aligned=True`` it shifts the box by -0.5 px (pixel i's centre is at i + 0.5 in the
    box's coordinates), which is exactly the retina's convention (pixel i spans [i, i + 1)), so
    the box is given by its edges x1 = cx - sx/2, y1 = cy - sy/2, x2 = cx + sx/2, y2 = cy + sy/2.
    roi_align clamps samples near the border instead of padding with zeros, so this agrees only
    where every sample lies between the centres of the outermost pixels."""
    batch, channels, height, width = images.shape
    count = centres.shape[1]
    side_x, side_y = widths_heights(sides)
    cx = (centres[..., 0] + 1) / 2 * width
    cy = (centres[..., 1] + 1) / 2 * height
    corners = torch.stack([cx - side_x / 2, cy - side_y / 2, cx + side_x / 2, cy + side_y / 2], dim=-1)
    index = torch.arange(batch, dtype=images.dtype).repeat_interleave(count)[:, None]
    rois = torch.cat([index, corners.reshape(-1, 4).to(images.dtype)], dim=1)
    out = roi_align(images, rois, (h, w), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return out.reshape(batch, count, channels, h, w)


def boxes_inside(batch: int, count: int, height: int, width: int, seed: int, square: bool):
    """Boxes whose edges lie in [1, W - 1] x [1, H - 1], so every sample is at least half a pixel
    inside the outermost pixels' centres."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(batch, count, 4, generator=generator, dtype=torch.float64)
    if square:
        most = min(width, height) - 2.0
        side = 0.25 + u[..., 0] * (most - 0.25)
        cx = 1 + side / 2 + u[..., 1] * (width - 2 - side)
        cy = 1 + side / 2 + u[..., 2] * (height - 2 - side)
        return to_normalised(torch.stack([cx, cy], dim=-1), height, width), side
    side_x = 0.25 + u[..., 0] * (width - 2.25)
    side_y = 0.25 + u[..., 1] * (height - 2.25)
    cx = 1 + side_x / 2 + u[..., 2] * (width - 2 - side_x)
    cy = 1 + side_y / 2 + u[..., 3] * (height - 2 - side_y)
    return to_normalised(torch.stack([cx, cy], dim=-1), height, width), torch.stack([side_x, side_y], dim=-1)


@FUNCTIONS
@pytest.mark.parametrize(
    ("shape", "count", "size", "square"),
    [
        ((2, 3, 16, 16), 3, (4, 4), True),
        ((2, 2, 13, 21), 4, (3, 5), False),
        ((1, 1, 40, 33), 5, (9, 7), False),  # upscaling and downscaling boxes
        ((3, 2, 7, 9), 2, (1, 1), False),
    ],
)
def test_bilinear_inside_the_image_equals_roi_align(fn, shape, count: int, size, square: bool) -> None:
    images = random_images(*shape, torch.float64, seed=3)
    centres, sides = boxes_inside(shape[0], count, shape[2], shape[3], seed=4, square=square)
    out = fn(images, centres, sides, size, "bilinear")
    torch.testing.assert_close(out, roi_align_oracle(images, centres, sides, *size), atol=1e-12, rtol=1e-12)


@FUNCTIONS
@pytest.mark.parametrize("square", [True, False])
def test_bilinear_anywhere_equals_one_affine_grid_and_grid_sample_per_box(fn, square: bool) -> None:
    """Inside, across the border and outside: zeros padding, as grid_sample(align_corners=False)."""
    images = random_images(2, 3, 11, 14, torch.float64, seed=5)
    centres, sides = random_boxes(2, 6, 11, 14, centre_span=(-1.5, 1.5), side_span=(0.4, 20.0), square=square, seed=6)
    out = fn(images, centres, sides, (5, 3), "bilinear")
    torch.testing.assert_close(out, affine_grid_oracle(images, centres, sides, 5, 3), atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Area: a brute-force double loop over pixels
# ----------------------------------------------------------------------------------------------


@FUNCTIONS
@pytest.mark.parametrize(
    ("shape", "count", "size", "square", "centre_span", "side_span"),
    [
        ((1, 2, 6, 7), 3, (2, 3), False, (-0.6, 0.6), (0.6, 5.0)),  # inside, cells smaller and larger than a pixel
        ((2, 1, 5, 8), 2, (3, 3), True, (-1.3, 1.3), (1.0, 9.0)),  # across and beyond the border
        ((1, 1, 4, 4), 2, (4, 1), False, (-1.0, 1.0), (5.0, 12.0)),  # boxes larger than the image
    ],
)
def test_area_equals_a_brute_force_mean_over_pixels(fn, shape, count, size, square, centre_span, side_span) -> None:
    images = random_images(*shape, torch.float64, seed=7)
    centres, sides = random_boxes(
        shape[0], count, shape[2], shape[3], centre_span=centre_span, side_span=side_span, square=square, seed=8
    )
    out = fn(images, centres, sides, size, "area")
    np.testing.assert_allclose(out.numpy(), brute_force_area(images, centres, sides, *size), atol=1e-12, rtol=1e-11)


@HYPOTHESIS
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 7), st.integers(1, 7)),
    count=st.integers(1, 3),
    size=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    square=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_area_of_the_operator_equals_the_brute_force_mean_on_random_boxes(shape, count, size, square, seed) -> None:
    images = random_images(*shape, torch.float64, seed)
    centres, sides = random_boxes(
        shape[0], count, shape[2], shape[3], centre_span=(-1.4, 1.4), side_span=(0.3, 10.0), square=square, seed=seed
    )
    out = box_glimpse(images, centres, sides, size, "area")
    np.testing.assert_allclose(out.numpy(), brute_force_area(images, centres, sides, *size), atol=1e-12, rtol=1e-11)


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
def test_pixel_aligned_area_equals_crop_and_avg_pool(fn, mode: str) -> None:
    """An 8 x 4 box on integer edges, in 4 x 2 cells of 2 x 2 px: area is avg_pool2d of the crop.
    (Bilinear samples the cell centres, which fall on pixel corners: the mean of 4 pixels too.)"""
    images = random_images(2, 3, 10, 12, torch.float64, seed=9)
    centres = to_normalised(torch.tensor([[[5.0, 4.0]], [[7.0, 6.0]]], dtype=torch.float64), 10, 12)
    sides = torch.tensor([[[8.0, 4.0]], [[8.0, 4.0]]], dtype=torch.float64)
    out = fn(images, centres, sides, (2, 4), mode)
    for b, (left, top) in enumerate([(1, 2), (3, 4)]):
        crop = images[b : b + 1, :, top : top + 4, left : left + 8]
        expected = torch.nn.functional.avg_pool2d(crop, 2)[0]
        torch.testing.assert_close(out[b, 0], expected, atol=1e-12, rtol=1e-12)


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
def test_square_sides_equal_rectangles_with_equal_width_and_height(fn, mode: str) -> None:
    images = random_images(2, 2, 9, 8, torch.float64, seed=10)
    centres, sides = random_boxes(2, 3, 9, 8, square=True, seed=11)
    square = fn(images, centres, sides, 3, mode)
    rectangle = fn(images, centres, torch.stack([sides, sides], dim=-1), 3, mode)
    torch.testing.assert_close(square, rectangle, atol=0, rtol=0)


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
def test_size_as_an_int_a_pair_or_numpy_integers_gives_the_same_glimpse(fn, mode: str) -> None:
    images = random_images(1, 2, 9, 8, torch.float64, seed=12)
    centres, sides = random_boxes(1, 2, 9, 8, seed=13)
    expected = fn(images, centres, sides, 3, mode)
    for size in [(3, 3), [3, 3], np.int64(3), (np.int32(3), np.int64(3)), torch.Size([3, 3])]:
        torch.testing.assert_close(fn(images, centres, sides, size, mode), expected, atol=0, rtol=0)


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
def test_rows_and_columns_of_the_size_follow_height_and_width(fn, mode: str) -> None:
    """size = (h, w): h rows along the box's height, w columns along its width; transposing the
    image, the box and the size transposes the glimpse."""
    images = random_images(2, 2, 9, 13, torch.float64, seed=14)
    centres, sides = random_boxes(2, 3, 9, 13, seed=15)
    out = fn(images, centres, sides, (2, 5), mode)
    assert out.shape == (2, 3, 2, 2, 5)
    flipped = fn(images.transpose(2, 3), centres.flip(-1), sides.flip(-1), (5, 2), mode)
    torch.testing.assert_close(flipped, out.transpose(3, 4), atol=1e-12, rtol=1e-12)
