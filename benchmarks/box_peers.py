"""Peers of the fused box glimpse: the ways users read K boxes per image in plain PyTorch.

The benchmark suite (``benchmarks/test_bench_boxes.py``) times every peer against
:func:`gdram_ext.box_glimpse`, and ``tests/boxes/test_box_peers.py`` checks each one equal to the op's
function where it claims to be, so the peers cannot drift. Every peer has one signature,
``peer(images (B, C, H, W), boxes: Boxes, size, mode) -> (B, K, C, h, w)``, and accepts only the
modes it implements; :class:`Boxes` holds the op's arguments (centres, sides) and, for boxes that are
the cells of a :class:`Grid`, the cells' indices, which TNet's method reads instead.

Box ``(b, k)`` covers ``[cx - sx/2, cx + sx/2) x [cy - sy/2, cy + sy/2)`` pixels, ``cx = (x + 1) / 2 * W``
from its centre ``(x, y)`` in [-1, 1], cut into ``h x w`` cells.

* :func:`roi_align_peer`: ``torchvision.ops.roi_align`` over the ``B * K`` boxes in one call,
  ``aligned=True``; ``sampling_ratio=1`` (each cell's centre) for ``bilinear``, adaptive
  (``ceil(cell side)`` samples per side) for ``area``. Differentiable with respect to images only.
* :func:`tnet_unfold`: TNet's method (Papadopoulos et al. 2021): every cell of the grid
  (``Tensor.unfold`` twice: a view, where TensorFlow's ``extract_patches`` and ``F.unfold`` copy every
  cell), the kept cells gathered by index, then ``F.interpolate`` (bilinear without anti-aliasing,
  as TNet; ``mode="area"``, adaptive average pooling, for ``area``). Grid cells only; images only.
* :func:`crop_loop`: a Python loop over (b, k): slice the box at whole pixels, ``F.interpolate``
  (bilinear; ``antialias=True`` for ``area``), ``torch.cat``. Images only.
* :func:`affine_grid_sample`: one ``F.affine_grid`` over the ``B * K`` thetas and one ``F.grid_sample``
  (the grids stacked along the output height): the fastest plain-PyTorch ``bilinear``, and
  differentiable with respect to images, centres and sides.
* :func:`coverage_einsum`: exact cell means by separable coverage matrices and two ``einsum``
  (``area``); differentiable with respect to images, centres and sides.
* :func:`fused`: the operator under test, ``gdram_ext.box_glimpse``.

Boxes are expected inside the image, with cells of at least one pixel (what the benchmarks read).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import gdram_ext

MODES = ("bilinear", "area")


@dataclass(frozen=True)
class Grid:
    """TNet's cells: an ``n x n`` grid of squares of ``cell`` pixels, ``stride`` pixels apart, from the
    image's top-left corner (TNet at 512 px: ``Grid(3, 256, 128)``, cells of half the side, overlapping
    by half)."""

    n: int
    cell: int
    stride: int

    def boxes(self, cells: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres (B, K, 2) and sides (B, K) of the cells with row-major indices ``cells`` (B, K)."""
        rows = torch.div(cells, self.n, rounding_mode="floor")
        cols = cells % self.n
        half = self.cell / 2
        x = (cols * self.stride + half) / width * 2 - 1
        y = (rows * self.stride + half) / height * 2 - 1
        sides = torch.full(cells.shape, float(self.cell), device=cells.device)
        return torch.stack([x, y], dim=-1).float(), sides


@dataclass(frozen=True)
class Boxes:
    """The K boxes of each image: the op's ``centres`` (B, K, 2) and ``sides`` (B, K) or (B, K, 2); for
    grid cells also their ``grid`` and row-major indices ``cells`` (B, K) (None otherwise)."""

    centres: torch.Tensor
    sides: torch.Tensor
    cells: torch.Tensor | None = None
    grid: Grid | None = None


BoxFn = Callable[[torch.Tensor, Boxes, "int | tuple[int, int]", str], torch.Tensor]


def _require_mode(peer: str, mode: str, modes: tuple[str, ...]) -> None:
    if mode not in modes:
        raise ValueError(f"{peer} implements modes {modes}, got {mode!r}")


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _sides_xy(sides: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) widths and heights from sides (B, K) (squares) or (B, K, 2)."""
    return sides[..., None].expand(*sides.shape, 2) if sides.dim() == 2 else sides


def _pixel_centres(centres: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, K, 2) box centres in pixels (edge coordinates: 0 is the image's left/top edge)."""
    return (centres + 1) * centres.new_tensor([width / 2, height / 2])


def roi_align_peer(images: torch.Tensor, boxes: Boxes, size: int | tuple[int, int], mode: str) -> torch.Tensor:
    """``torchvision.ops.roi_align`` over every box in one call, ``aligned=True``.

    Boxes ``(index, x1, y1, x2, y2)`` in pixels are built from the centres and sides each call.
    ``bilinear`` samples each cell's centre once (``sampling_ratio=1``): the op's function wherever
    every sample lies inside the image (within one pixel outside roi_align repeats the border where the
    op reads zeros). ``area`` averages ``ceil(cell side)`` x ``ceil(cell side)`` evenly spaced samples
    (``sampling_ratio=-1``): the exact cell mean where the cells are whole pixels at whole-pixel edges,
    an approximation elsewhere. Differentiable with respect to images only.
    """
    from torchvision.ops import roi_align

    _require_mode("roi_align", mode, MODES)
    batch, channels, height, width = images.shape
    count = boxes.centres.shape[1]
    h, w = _hw(size)
    centre = _pixel_centres(boxes.centres.to(images.dtype), height, width)
    half = _sides_xy(boxes.sides.to(images.dtype)) / 2
    index = torch.arange(batch, dtype=images.dtype, device=images.device)[:, None, None].expand(batch, count, 1)
    rois = torch.cat([index, centre - half, centre + half], dim=-1).reshape(batch * count, 5)
    sampling_ratio = 1 if mode == "bilinear" else -1
    out = roi_align(images, rois, (h, w), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    return out.reshape(batch, count, channels, h, w)


def tnet_unfold(images: torch.Tensor, boxes: Boxes, size: int | tuple[int, int], mode: str) -> torch.Tensor:
    """TNet's method: every grid cell, the kept ones gathered, each resized to the output.

    ``images.unfold(2, cell, stride).unfold(3, cell, stride)`` is every cell as a view
    (B, C, n, n, cell, cell); indexing it with the kept cells' rows and columns copies them out
    (B, K, C, cell, cell); ``F.interpolate`` resizes them all at once: ``bilinear`` with
    ``align_corners=False`` and no anti-aliasing (TNet's ``tf.image.resize``), or ``area`` (adaptive
    average pooling, the anti-aliased variant TNet lacks). ``bilinear`` equals the op where the cell is
    at least as large as the output (no clamping at the cell's border); ``area`` where the cell side is
    a multiple of the output's. Needs grid cells (``boxes.grid``). Differentiable with respect to
    images only.
    """
    _require_mode("tnet_unfold", mode, MODES)
    if boxes.grid is None or boxes.cells is None:
        raise ValueError("tnet_unfold reads grid cells: boxes.grid and boxes.cells are required")
    batch, channels = images.shape[:2]
    count = boxes.cells.shape[1]
    grid = boxes.grid
    h, w = _hw(size)
    patches = images.unfold(2, grid.cell, grid.stride).unfold(3, grid.cell, grid.stride)  # (B, C, n, n, c, c)
    rows = torch.div(boxes.cells, grid.n, rounding_mode="floor")
    cols = boxes.cells % grid.n
    index = torch.arange(batch, device=images.device)[:, None]
    kept = patches[index, :, rows, cols].reshape(batch * count, channels, grid.cell, grid.cell)
    if mode == "bilinear":
        out = F.interpolate(kept, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    else:
        out = F.interpolate(kept, size=(h, w), mode="area")
    return out.reshape(batch, count, channels, h, w)


def crop_loop(images: torch.Tensor, boxes: Boxes, size: int | tuple[int, int], mode: str) -> torch.Tensor:
    """A Python loop over the images and their boxes: slice each box at whole pixels, ``F.interpolate`` it.

    The centres and sides are read on the host; each box's edges are rounded half up and clipped to
    the image. ``bilinear``: ``F.interpolate(align_corners=False)``, the op's function for boxes
    inside the image with whole-pixel edges and sides at least the output's; ``area``: the same with
    ``antialias=True`` (a triangle filter as wide as two cells: area-like, not the exact cell mean).
    Differentiable with respect to images only (the loop runs over ``images``' rows, so that autograd
    scatters each crop's gradient into its image, not into a zeroed copy of the whole batch).
    """
    _require_mode("crop_loop", mode, MODES)
    batch, channels, height, width = images.shape
    count = boxes.centres.shape[1]
    h, w = _hw(size)
    centre = _pixel_centres(boxes.centres.detach().double(), height, width).tolist()
    sides = _sides_xy(boxes.sides.detach().double()).tolist()
    antialias = mode == "area"
    crops = []
    for image, image_centres, image_sides in zip(images, centre, sides, strict=True):
        for (cx, cy), (sx, sy) in zip(image_centres, image_sides, strict=True):
            left, right = max(math.floor(cx - sx / 2 + 0.5), 0), min(math.floor(cx + sx / 2 + 0.5), width)
            top, bottom = max(math.floor(cy - sy / 2 + 0.5), 0), min(math.floor(cy + sy / 2 + 0.5), height)
            crop = image[None, :, top:bottom, left:right]
            crops.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=antialias))
    return torch.cat(crops).reshape(batch, count, channels, h, w)


def affine_grid_sample(images: torch.Tensor, boxes: Boxes, size: int | tuple[int, int], mode: str) -> torch.Tensor:
    """One ``F.affine_grid`` over every box, one ``F.grid_sample`` over the batch (bilinear).

    theta of box (b, k) = ``[[sx / W, 0, x], [0, sy / H, y]]``, built each call; the K grids of an
    image are stacked along the output height, so each image is read once and never repeated per box.
    The op's function everywhere (zeros padding, ``align_corners=False``). Differentiable with respect
    to images, centres and sides. Returns a (B, K, C, h, w) view of grid_sample's (B, C, K * h, w).
    """
    _require_mode("affine_grid_sample", mode, ("bilinear",))
    batch, channels, height, width = images.shape
    count = boxes.centres.shape[1]
    h, w = _hw(size)
    scale = _sides_xy(boxes.sides.to(images.dtype)) / images.new_tensor([width, height])  # (B, K, 2)
    centres = boxes.centres.to(images.dtype)
    zero = torch.zeros_like(scale[..., 0])
    theta = torch.stack(
        [
            torch.stack([scale[..., 0], zero, centres[..., 0]], dim=-1),
            torch.stack([zero, scale[..., 1], centres[..., 1]], dim=-1),
        ],
        dim=-2,
    )  # (B, K, 2, 3)
    grid = F.affine_grid(theta.reshape(batch * count, 2, 3), [batch * count, 1, h, w], align_corners=False)
    grid = grid.reshape(batch, count * h, w, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(batch, channels, count, h, w).transpose(1, 2)


def _coverage(starts: torch.Tensor, cell: torch.Tensor, count: int, extent: int) -> torch.Tensor:
    """(B, K, count, extent): the fraction of each pixel in [0, extent) that each of the ``count``
    cells [start + i * cell, start + (i + 1) * cell) covers, over the cell's side."""
    steps = torch.arange(count, device=starts.device, dtype=starts.dtype)
    lefts = starts[..., None] + steps * cell[..., None]  # (B, K, count)
    pixel = torch.arange(extent, device=starts.device, dtype=starts.dtype)
    rights = lefts + cell[..., None]
    overlap = torch.minimum(rights[..., None], pixel + 1) - torch.maximum(lefts[..., None], pixel)
    return overlap.clamp(min=0) / cell[..., None, None]


def coverage_einsum(images: torch.Tensor, boxes: Boxes, size: int | tuple[int, int], mode: str) -> torch.Tensor:
    """Exact cell means (area): separable coverage matrices and two ``einsum``.

    ``cover_y`` (B, K, h, H) and ``cover_x`` (B, K, w, W) hold the fraction of each pixel row and
    column that each cell covers; the glimpse is ``cover_y @ image @ cover_x^T`` per box. The op's
    function everywhere (pixels outside the image count as zero). Differentiable with respect to
    images, centres and sides.
    """
    _require_mode("coverage_einsum", mode, ("area",))
    height, width = images.shape[-2:]
    h, w = _hw(size)
    sides = _sides_xy(boxes.sides.to(images.dtype))
    centre = _pixel_centres(boxes.centres.to(images.dtype), height, width)
    starts = centre - sides / 2
    cover_x = _coverage(starts[..., 0], sides[..., 0] / w, w, width)
    cover_y = _coverage(starts[..., 1], sides[..., 1] / h, h, height)
    rows = torch.einsum("bkry,bcyx->bkcrx", cover_y, images)  # (B, K, C, h, W)
    return torch.einsum("bkcrx,bkqx->bkcrq", rows, cover_x)


def fused(images: torch.Tensor, boxes: Boxes, size: int | tuple[int, int], mode: str) -> torch.Tensor:
    """The operator under test: ``gdram_ext.box_glimpse(images, boxes.centres, boxes.sides, size, mode)``."""
    return gdram_ext.box_glimpse(images, boxes.centres, boxes.sides, size, mode)


@dataclass(frozen=True)
class BoxPeer:
    """A benchmarked implementation: ``fn(images, boxes, size, mode)``.

    ``modes``: the modes it implements; ``box_grad``: whether it differentiates with respect to the
    centres and sides (all differentiate with respect to images); ``grid_only``: whether it reads
    grid cells (``boxes.grid``) rather than arbitrary boxes.
    """

    name: str
    fn: BoxFn
    modes: tuple[str, ...]
    box_grad: bool
    grid_only: bool = False


BOX_PEERS: dict[str, BoxPeer] = {
    peer.name: peer
    for peer in (
        BoxPeer("roi_align", roi_align_peer, MODES, False),
        BoxPeer("tnet_unfold", tnet_unfold, MODES, False, grid_only=True),
        BoxPeer("crop_loop", crop_loop, MODES, False),
        BoxPeer("affine_grid_sample", affine_grid_sample, ("bilinear",), True),
        BoxPeer("coverage_einsum", coverage_einsum, ("area",), True),
        BoxPeer("fused", fused, MODES, True),
    )
}
"""Every implementation the box suite compares, by name; ``"fused"`` is the operator under test."""
