"""What the box glimpse tests share: boxes in pixels, image layouts, independent oracles, hypothesis cases.

Imported by the ``test_box_*.py`` files of this folder (pytest puts this folder on ``sys.path``; the
name differs from ``tests/retina/forward_cases.py`` and ``benchmarks/box_cases.py``, so that every
folder can be collected in one run without one helper module shadowing another).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from gdram_ext import MODES

LAYOUTS = ("contiguous", "channels_last", "strided")
HYPOTHESIS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# |got - float64 reference| <= atol + rtol * |reference|: float32 as the retina promises; half
# precision formats about one rounding of the result plus slack (they accumulate in float32).
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def with_layout(images: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``images`` with other strides."""
    batch, channels, height, width = images.shape
    if layout == "contiguous":
        return images.contiguous()
    if layout == "channels_last":
        return images.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # a view with gaps in every dimension
        big = images.new_zeros(batch, 2 * channels, 2 * height, 3 * width)
        big[:, ::2, ::2, ::3] = images
        return big[:, ::2, ::2, ::3]
    raise AssertionError(layout)


def to_normalised(pixel_centres: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) box centres (cx, cy) in pixels -> (x, y) in the retina's [-1, 1] coordinates."""
    scale = pixel_centres.new_tensor([width, height])
    return pixel_centres / scale * 2 - 1


def to_pixels(centres: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) normalised centres (x, y) -> (cx, cy) in pixels: ``cx = (x + 1) / 2 * W``."""
    scale = centres.new_tensor([width, height])
    return (centres + 1) / 2 * scale


def widths_heights(sides: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) widths and heights from ``sides`` (B, K) or (B, K, 2)."""
    return (sides, sides) if sides.dim() == 2 else (sides[..., 0], sides[..., 1])


def random_boxes(
    batch: int,
    count: int,
    height: int,
    width: int,
    *,
    centre_span: tuple[float, float] = (-1.0, 1.0),
    side_span: tuple[float, float] = (1.3, 6.7),
    square: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (never round) centres (B, K, 2) in normalised coordinates and sides in pixels:
    (B, K) squares, or (B, K, 2) rectangles. Random values keep every cell edge and bilinear
    sample point off pixel boundaries, where derivatives are one-sided."""
    generator = torch.Generator().manual_seed(seed)
    low, high = centre_span
    centres = torch.rand(batch, count, 2, generator=generator, dtype=torch.float64) * (high - low) + low
    low, high = side_span
    shape = (batch, count) if square else (batch, count, 2)
    sides = torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low
    return centres.to(dtype), sides.to(dtype)


def random_images(batch: int, channels: int, height: int, width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64).to(dtype)


# ----------------------------------------------------------------------------------------------
# Independent oracles
# ----------------------------------------------------------------------------------------------


def affine_grid_oracle(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, h: int, w: int):
    """The bilinear contract, literally: one ``affine_grid`` + ``grid_sample`` per box."""
    batch, channels, height, width = images.shape
    side_x, side_y = widths_heights(sides)
    out = images.new_zeros(batch, centres.shape[1], channels, h, w)
    for b in range(batch):
        for k in range(centres.shape[1]):
            theta = images.new_zeros(1, 2, 3)
            theta[0, 0, 0] = side_x[b, k] / width
            theta[0, 0, 2] = centres[b, k, 0]
            theta[0, 1, 1] = side_y[b, k] / height
            theta[0, 1, 2] = centres[b, k, 1]
            grid = F.affine_grid(theta, [1, channels, h, w], align_corners=False)
            out[b, k] = F.grid_sample(images[b : b + 1], grid, padding_mode="zeros", align_corners=False)[0]
    return out


def brute_force_area(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, h: int, w: int) -> np.ndarray:
    """The area contract, literally: for every cell, a double loop over the image's pixels adds
    each pixel's value times the area of its intersection with the cell, then divides by the
    cell's full area (pixels outside the image count as zero). Plain Python floats and NumPy."""
    pixels = images.detach().double().cpu().numpy()
    batch, channels, height, width = pixels.shape
    count = centres.shape[1]
    centres = to_pixels(centres.detach().double().cpu(), height, width).tolist()
    side_x, side_y = (s.detach().double().cpu().tolist() for s in widths_heights(sides))
    out = np.zeros((batch, count, channels, h, w))
    for b in range(batch):
        for k in range(count):
            (cx, cy), sx, sy = centres[b][k], side_x[b][k], side_y[b][k]
            for r in range(h):
                y0, y1 = cy - sy / 2 + r * sy / h, cy - sy / 2 + (r + 1) * sy / h
                for q in range(w):
                    x0, x1 = cx - sx / 2 + q * sx / w, cx - sx / 2 + (q + 1) * sx / w
                    total = np.zeros(channels)
                    for y in range(height):
                        dy = min(y1, y + 1) - max(y0, y)
                        if dy <= 0:
                            continue
                        for x in range(width):
                            dx = min(x1, x + 1) - max(x0, x)
                            if dx > 0:
                                total += pixels[b, :, y, x] * (dx * dy)
                    out[b, k, :, r, q] = total / ((x1 - x0) * (y1 - y0))
    return out


# ----------------------------------------------------------------------------------------------
# Hypothesis cases
# ----------------------------------------------------------------------------------------------

# Centres inside, exactly at and beyond the border, and far outside.
centre_values = st.one_of(
    st.sampled_from([-1.0, 1.0, 0.0, -1.25, 1.25]),
    st.floats(-1.6, 1.6, allow_nan=False, allow_infinity=False),
)
# Sides from a fraction of a pixel to larger than the image, some round (edges on pixel boundaries).
side_values = st.one_of(st.sampled_from([1.0, 2.0, 3.0, 8.0]), st.floats(0.25, 40.0))


@st.composite
def box_cases(draw: st.DrawFn, max_extent: int = 20) -> dict:
    batch, count = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    square = draw(st.booleans())
    boxes = batch * count
    side_shape = (batch, count) if square else (batch, count, 2)
    return {
        "shape": (batch, draw(st.integers(1, 3)), draw(st.integers(1, max_extent)), draw(st.integers(1, max_extent))),
        "centres": torch.tensor(
            draw(st.lists(st.tuples(centre_values, centre_values), min_size=boxes, max_size=boxes)), dtype=torch.float64
        ).reshape(batch, count, 2),
        "sides": torch.tensor(
            draw(st.lists(side_values, min_size=boxes * (1 if square else 2), max_size=boxes * (1 if square else 2))),
            dtype=torch.float64,
        ).reshape(side_shape),
        "size": draw(st.one_of(st.integers(1, 6), st.tuples(st.integers(1, 6), st.integers(1, 6)))),
        "mode": draw(st.sampled_from(MODES)),
        "layout": draw(st.sampled_from(LAYOUTS)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def output_size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)
