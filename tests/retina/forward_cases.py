"""What the forward tests share: image layouts, independent oracles and hypothesis cases.

Imported by ``test_forward.py`` and ``test_forward_inputs.py`` (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from gdram_ext import MODES

LAYOUTS = ("contiguous", "channels_last", "transposed", "strided", "expanded")
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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
