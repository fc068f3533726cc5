"""Pure-PyTorch retina and box glimpses: the tests' oracle, the fallback backend and a benchmark peer.

Same functions as the compiled operators (see :func:`gdram_ext.retina_glimpse` and
:func:`gdram_ext.box_glimpse`), written with vectorised tensor operations and differentiated by
autograd (with respect to the images, the locations/centres and the boxes' sides):

* ``bilinear``: one ``F.grid_sample`` over a grid that stacks every scale's (every box's) sample
  points.
* ``area``: separable coverage matrices (the fraction of every pixel row/column that each
  output cell covers), contracted with the image by two ``einsum``. The box glimpse builds them
  from tensors only (``torch.minimum``/``torch.maximum``), so that the derivative with respect
  to the sides flows through the cell edges.

Samples whose location is not finite or lies so far out that no glimpse cell can touch the
image give zeros (and zero gradients), as in the compiled kernels; so do boxes whose centre is
not finite or whose side (either side) is not finite or not > 0. Such inputs are replaced by
harmless values before any arithmetic, so that no NaN reaches the gradients.

``retina_glimpse``/``box_glimpse`` check their arguments; ``glimpse``/``boxes`` take arguments
already checked (what the public wrappers call when the compiled kernels are missing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gdram_ext.contract import scale_sides
from gdram_ext.validation import check_arguments, check_box_arguments


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


def _box_sides(sides: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) widths and (B, K) heights of the boxes from ``sides`` (B, K) (squares) or (B, K, 2)."""
    if sides.dim() == 2:
        return sides, sides
    return sides[..., 0], sides[..., 1]


def _valid_boxes(
    centres: torch.Tensor, side_x: torch.Tensor, side_y: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """(B, K) bool: finite centre, finite sides > 0, and the box can still touch the image
    (within the one pixel a bilinear tap reaches past the border)."""
    finite = torch.isfinite(centres).all(dim=-1) & torch.isfinite(side_x) & torch.isfinite(side_y)
    positive = (side_x > 0) & (side_y > 0)
    near_x = centres[..., 0].abs() <= 1.0 + (side_x + 2.0) / width
    near_y = centres[..., 1].abs() <= 1.0 + (side_y + 2.0) / height
    return finite & positive & near_x & near_y


def _cell_centres(count: int, like: torch.Tensor) -> torch.Tensor:
    """(count,) centres of ``count`` equal cells of [-1, 1] (``affine_grid``, ``align_corners=False``)."""
    return (torch.arange(count, device=like.device, dtype=like.dtype) * 2 + 1) / count - 1


def _box_bilinear(
    images: torch.Tensor, centres: torch.Tensor, side_x: torch.Tensor, side_y: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    batch, channels, height, width = images.shape
    count = centres.shape[1]
    gx = centres[..., 0, None] + (side_x / width)[..., None] * _cell_centres(w, centres)  # (B, K, w) columns
    gy = centres[..., 1, None] + (side_y / height)[..., None] * _cell_centres(h, centres)  # (B, K, h) rows
    # Points past 1 + 1/extent read only zero padding (value and gradient 0): clamping them keeps
    # huge finite sides from overflowing grid_sample's pixel arithmetic without changing anything.
    gx = gx.clamp(-1.0 - 2.0 / width, 1.0 + 2.0 / width)
    gy = gy.clamp(-1.0 - 2.0 / height, 1.0 + 2.0 / height)
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1)
    grid = grid.reshape(batch, count * h, w, 2).to(images.dtype)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(batch, channels, count, h, w).transpose(1, 2)


def _box_coverage(starts: torch.Tensor, cell: torch.Tensor, extent: int) -> torch.Tensor:
    """Fraction of each pixel in [0, extent) covered by each cell [start, start + cell), over cell.

    ``starts``: (B, K, n) cell edges in pixels, ``cell``: (B, K) cell sides -> (B, K, n, extent).
    Tensor minimum/maximum only, so that the result is differentiable in ``starts`` and ``cell``.
    """
    pixel = torch.arange(extent, device=starts.device, dtype=starts.dtype)
    ends = starts + cell[..., None]
    overlap = torch.minimum(ends[..., None], pixel + 1) - torch.maximum(starts[..., None], pixel)
    return overlap.clamp(min=0) / cell[..., None, None]


def _box_area(
    images: torch.Tensor, centres: torch.Tensor, side_x: torch.Tensor, side_y: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    height, width = images.shape[-2:]
    cell_x, cell_y = side_x / w, side_y / h  # (B, K)
    left = (centres[..., 0] + 1) * (width / 2) - side_x / 2  # (B, K) box edges in pixels
    top = (centres[..., 1] + 1) * (height / 2) - side_y / 2
    columns = torch.arange(w, device=images.device, dtype=centres.dtype)
    rows = torch.arange(h, device=images.device, dtype=centres.dtype)
    cover_x = _box_coverage(left[..., None] + columns * cell_x[..., None], cell_x, width).to(images.dtype)
    cover_y = _box_coverage(top[..., None] + rows * cell_y[..., None], cell_y, height).to(images.dtype)
    partial = torch.einsum("bkry,bcyx->bkcrx", cover_y, images)  # (B, K, C, h, W)
    return torch.einsum("bkcrx,bkqx->bkcrq", partial, cover_x)


def box_glimpse(
    images: torch.Tensor,
    centres: torch.Tensor,
    sides: torch.Tensor,
    size: int | tuple[int, int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """K boxes per image, each read into h x w cells, in plain PyTorch; same contract as
    :func:`gdram_ext.box_glimpse`.

    Box ``(b, k)`` covers ``[cx - sx/2, cx + sx/2) x [cy - sy/2, cy + sy/2)`` in pixels, with
    ``cx = (x + 1) / 2 * W`` and ``cy = (y + 1) / 2 * H`` from its centre ``(x, y)``, cut into
    ``h`` rows and ``w`` columns of cells of ``sx / w`` by ``sy / h`` pixels.

    Args:
        images: (B, C, H, W) floating tensor, any strides.
        centres: (B, K, 2) box centres (x, y): -1 is the left/top edge of the image, +1 the
            right/bottom edge.
        sides: (B, K) sides of square boxes, or (B, K, 2) (width, height), in pixels.
        size: cells per box, an int (h = w) or a pair (h, w).
        mode: ``"bilinear"`` (sample at each cell's centre, zeros outside) or ``"area"`` (exact
            mean over each cell, pixels outside count as zero).

    Returns:
        (B, K, C, h, w), dtype of ``images``. Differentiable with respect to images, centres and
        sides; a box with a non-finite centre or a side that is not finite and > 0 reads zeros.
    """
    h, w = check_box_arguments(images, centres, sides, size, mode)
    return boxes(images, centres, sides, (h, w), mode)


def boxes(
    images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, size: tuple[int, int], mode: str
) -> torch.Tensor:
    """:func:`box_glimpse` on arguments already checked, with ``size`` resolved to ``(h, w)``."""
    h, w = size
    out_dtype = images.dtype
    compute = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    images = images.to(compute)
    centres = centres.to(compute)
    side_x, side_y = _box_sides(sides.to(compute))
    height, width = images.shape[-2:]
    valid = _valid_boxes(centres, side_x, side_y, height, width)  # (B, K)
    centres = torch.where(valid[..., None], centres, torch.zeros_like(centres))
    side_x = torch.where(valid, side_x, torch.ones_like(side_x))
    side_y = torch.where(valid, side_y, torch.ones_like(side_y))
    out = (_box_bilinear if mode == "bilinear" else _box_area)(images, centres, side_x, side_y, h, w)
    return (out * valid[:, :, None, None, None].to(compute)).to(out_dtype).contiguous()
