"""Pure-PyTorch retina glimpse: the tests' oracle, the fallback backend and a benchmark peer.

Same function as the compiled operator (see :func:`gdram_ext.retina_glimpse`), written with
vectorised tensor operations and differentiated by autograd:

* ``bilinear``: one ``F.grid_sample`` over a grid that stacks every scale's sample points.
* ``area``: separable coverage matrices (the fraction of every pixel row/column that each
  output cell covers), contracted with the image by two ``einsum``.

Samples whose location is not finite or lies so far out that no glimpse cell can touch the
image give zeros (and zero gradients), as in the compiled kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gdram_ext.contract import scale_sides
from gdram_ext.validation import check_arguments


def _valid_locations(locations: torch.Tensor, height: int, width: int, largest_side: float) -> torch.Tensor:
    """(B,) bool: the location is finite and the largest glimpse can still touch the image."""
    reach = locations.new_tensor([1.0 + (largest_side + 2.0) / width, 1.0 + (largest_side + 2.0) / height])
    return (locations.abs() <= reach).all(dim=1)


def _bilinear(images: torch.Tensor, locations: torch.Tensor, size: int, sides: list[float]) -> torch.Tensor:
    batch, channels, height, width = images.shape
    # Cell centres of a size x size grid in [-1, 1] (affine_grid with align_corners=False).
    base = (torch.arange(size, device=images.device, dtype=locations.dtype) * 2 + 1) / size - 1
    side = locations.new_tensor(sides)  # (S,)
    gx = locations[:, 0, None, None] + (side[:, None] / width) * base[None, :]  # (B, S, g) columns
    gy = locations[:, 1, None, None] + (side[:, None] / height) * base[None, :]  # (B, S, g) rows
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1)
    grid = grid.reshape(batch, len(sides) * size, size, 2).to(images.dtype)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.reshape(batch, channels, len(sides), size, size).transpose(1, 2)
    return out.reshape(batch, len(sides) * channels, size, size)


def _coverage(lefts: torch.Tensor, cell: torch.Tensor, extent: int) -> torch.Tensor:
    """Fraction of each pixel in [0, extent) covered by each cell [left, left + cell), over cell.

    ``lefts``: (B, S, g) left edges in pixels, ``cell``: (S,) cell sides -> (B, S, g, extent).
    """
    pixel = torch.arange(extent, device=lefts.device, dtype=lefts.dtype)
    right = lefts + cell[None, :, None]
    overlap = torch.minimum(right[..., None], pixel + 1) - torch.maximum(lefts[..., None], pixel)
    return overlap.clamp(min=0) / cell[None, :, None, None]


def _area(images: torch.Tensor, locations: torch.Tensor, size: int, sides: list[float]) -> torch.Tensor:
    batch, channels, height, width = images.shape
    side = locations.new_tensor(sides)  # (S,)
    cell = side / size
    steps = torch.arange(size, device=images.device, dtype=locations.dtype)
    centre_x = (locations[:, 0] + 1) * (width / 2)
    centre_y = (locations[:, 1] + 1) * (height / 2)
    lefts = centre_x[:, None, None] - side[None, :, None] / 2 + steps * cell[None, :, None]
    tops = centre_y[:, None, None] - side[None, :, None] / 2 + steps * cell[None, :, None]
    cover_x = _coverage(lefts, cell, width).to(images.dtype)  # (B, S, g, W)
    cover_y = _coverage(tops, cell, height).to(images.dtype)  # (B, S, g, H)
    rows = torch.einsum("bsry,bcyx->bscrx", cover_y, images)
    out = torch.einsum("bscrx,bsqx->bscrq", rows, cover_x)
    return out.reshape(batch, len(sides) * channels, size, size)


def retina_glimpse(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int = 12,
    num_scales: int = 4,
    scale_factor: float = 2.0,
    mode: str = "bilinear",
    base_size: float | None = None,
) -> torch.Tensor:
    """Multi-scale retina glimpse in plain PyTorch; same contract as :func:`gdram_ext.retina_glimpse`.

    Args:
        images: (B, C, H, W) floating tensor.
        locations: (B, 2) glimpse centres (x, y) in [-1, 1] image coordinates.

    Returns:
        (B, num_scales * C, size, size), scale-major, dtype of ``images``.
    """
    check_arguments(images, locations, size, num_scales, scale_factor, mode, base_size)
    return glimpse(images, locations, size, num_scales, scale_factor, mode, base_size)


def glimpse(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int,
    num_scales: int,
    scale_factor: float,
    mode: str,
    base_size: float | None,
) -> torch.Tensor:
    """:func:`retina_glimpse` on arguments already checked (the wrapper's fallback checks them once)."""
    sides = scale_sides(size, num_scales, scale_factor, base_size)
    out_dtype = images.dtype
    compute = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    images = images.to(compute)
    locations = locations.to(compute)
    height, width = images.shape[-2:]
    valid = _valid_locations(locations, height, width, max(sides))
    safe = torch.where(valid[:, None], locations, torch.zeros_like(locations))
    glimpse = (_bilinear if mode == "bilinear" else _area)(images, safe, size, sides)
    return (glimpse * valid[:, None, None, None].to(compute)).to(out_dtype)
