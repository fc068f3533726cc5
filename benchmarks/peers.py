"""Peers of the fused retina glimpse: the ways users write the same function in plain PyTorch.

The benchmark suite (``benchmarks/``) times every peer against :func:`gdram_ext.retina_glimpse`
and ``tests/retina/test_peers.py`` checks each one equal to it where its approximations are exact,
so the peers cannot drift. Every peer has the signature of the fused op,
``peer(images (B, C, H, W), locations (B, 2), size, num_scales, scale_factor, mode, base_size)
-> (B, num_scales * C, size, size)`` (scale-major), and accepts only the modes it implements.

* :func:`naive_crop` (peer 1): a Python loop over the batch that pads each image, slices each
  scale's square at integer pixel positions, then resizes every scale (avg-pool for ``area``,
  ``F.interpolate`` for ``bilinear``): what the popular RAM implementations do.
* :func:`grid_sample_per_scale` (peer 2): per-scale ``F.affine_grid`` + ``F.grid_sample`` +
  ``torch.cat`` with theta built each call: the published Gaussian-RAM approach (bilinear).
* :func:`grid_sample_vectorised` (peer 3): one ``affine_grid`` and one ``grid_sample`` over all
  scales at once: the best plain PyTorch does for ``bilinear``.
* :func:`coverage_einsum` (peer 3, ``area``): exact cell means as two separable ``einsum``
  (:mod:`gdram_ext.reference`): the best plain PyTorch does for ``area``.
* :func:`roi_align_glimpse` (peer 4): ``torchvision.ops.roi_align`` with every scale's box in one
  call, ``aligned=True``; one sample per cell for ``bilinear``, ``ceil(cell side)`` samples per cell
  side for ``area`` ("area-like").

Locations are expected inside the image, ``[-1, 1]`` (the fused op also handles glimpse centres
outside it; :func:`naive_crop` pads only for centres inside).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gdram_ext import MODES, reference, retina_glimpse
from gdram_ext.contract import scale_sides

GlimpseFn = Callable[..., torch.Tensor]


def _require_mode(peer: str, mode: str, modes: tuple[str, ...]) -> None:
    if mode not in modes:
        raise ValueError(f"{peer} implements modes {modes}, got {mode!r}")


def naive_crop(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int = 12,
    num_scales: int = 4,
    scale_factor: float = 2.0,
    mode: str = "bilinear",
    base_size: float | None = None,
) -> torch.Tensor:
    """Peer 1: pad, slice and resize, sample by sample, in a Python loop.

    Rounding: each scale's square has side ``round(side_i)`` pixels and left/top edge
    ``round(centre - side_i / 2)`` (half up), with the centre ``(x + 1) / 2 * W`` read on the host.
    It equals the fused op where the squares are pixel-aligned (integer sides and edges), with
    ``side_i >= size`` for ``bilinear`` (so ``F.interpolate`` never clamps at the crop's border),
    and ``side_i`` a multiple of ``size`` for ``area`` (so the avg-pool cells are whole pixels).
    Each image is padded once with zeros by half the largest square plus a pixel, enough for any
    centre in ``[-1, 1]``.
    Differentiable with respect to images only (the crop positions are integers).

    Returns:
        (B, num_scales * C, size, size), scale-major.
    """
    _require_mode("naive_crop", mode, MODES)
    height, width = images.shape[-2:]
    sides = [round(side) for side in scale_sides(size, num_scales, scale_factor, base_size)]
    margin = max(sides) // 2 + 1
    crops: list[list[torch.Tensor]] = [[] for _ in sides]
    for image, (x, y) in zip(images, locations.tolist(), strict=True):
        padded = F.pad(image, (margin, margin, margin, margin))
        centre_x, centre_y = (x + 1) / 2 * width, (y + 1) / 2 * height
        for scale, side in enumerate(sides):
            left = math.floor(centre_x - side / 2 + 0.5) + margin
            top = math.floor(centre_y - side / 2 + 0.5) + margin
            crops[scale].append(padded[:, top : top + side, left : left + side])
    resized = []
    for scale_crops in crops:
        batch = torch.stack(scale_crops)  # (B, C, side, side)
        if mode == "area":
            resized.append(F.adaptive_avg_pool2d(batch, size))
        else:
            resized.append(F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(resized, dim=1)


def grid_sample_per_scale(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int = 12,
    num_scales: int = 4,
    scale_factor: float = 2.0,
    mode: str = "bilinear",
    base_size: float | None = None,
) -> torch.Tensor:
    """Peer 2: for each scale, build theta, ``F.affine_grid``, ``F.grid_sample``; then ``torch.cat``.

    theta_i = ``[[side_i / W, 0, x], [0, side_i / H, y]]`` per sample, built each call.
    Differentiable with respect to images and locations. Bilinear only.

    Returns:
        (B, num_scales * C, size, size), scale-major.
    """
    _require_mode("grid_sample_per_scale", mode, ("bilinear",))
    batch, channels, height, width = images.shape
    glimpses = []
    for side in scale_sides(size, num_scales, scale_factor, base_size):
        theta = torch.zeros(batch, 2, 3, dtype=images.dtype, device=images.device)
        theta[:, 0, 0] = side / width
        theta[:, 1, 1] = side / height
        theta[:, :, 2] = locations.to(images.dtype)
        grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
        glimpses.append(F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    return torch.cat(glimpses, dim=1)


def grid_sample_vectorised(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int = 12,
    num_scales: int = 4,
    scale_factor: float = 2.0,
    mode: str = "bilinear",
    base_size: float | None = None,
) -> torch.Tensor:
    """Peer 3 (bilinear): one ``affine_grid`` for every (sample, scale), one ``grid_sample``.

    The ``num_scales`` grids of a sample are stacked along the output height, so the image is read
    once per sample without being repeated per scale. Differentiable with respect to images and
    locations. Bilinear only.

    Returns:
        (B, num_scales * C, size, size), scale-major.
    """
    _require_mode("grid_sample_vectorised", mode, ("bilinear",))
    batch, channels, height, width = images.shape
    sides = scale_sides(size, num_scales, scale_factor, base_size)
    scale = images.new_tensor([[side / width, side / height] for side in sides])  # (S, 2)
    theta = torch.zeros(batch, num_scales, 2, 3, dtype=images.dtype, device=images.device)
    theta[..., 0, 0] = scale[:, 0]
    theta[..., 1, 1] = scale[:, 1]
    theta[..., :, 2] = locations.to(images.dtype)[:, None, :]
    grid = F.affine_grid(
        theta.reshape(batch * num_scales, 2, 3), [batch * num_scales, 1, size, size], align_corners=False
    )
    grid = grid.reshape(batch, num_scales * size, size, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.reshape(batch, channels, num_scales, size, size).transpose(1, 2)
    return out.reshape(batch, num_scales * channels, size, size)


def coverage_einsum(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int = 12,
    num_scales: int = 4,
    scale_factor: float = 2.0,
    mode: str = "area",
    base_size: float | None = None,
) -> torch.Tensor:
    """Peer 3 (area): exact cell means by separable coverage matrices and two ``einsum``.

    This is :func:`gdram_ext.reference.retina_glimpse` in ``area`` mode. Differentiable with
    respect to images and locations. Area only.

    Returns:
        (B, num_scales * C, size, size), scale-major.
    """
    _require_mode("coverage_einsum", mode, ("area",))
    return reference.retina_glimpse(images, locations, size, num_scales, scale_factor, mode, base_size)


def roi_align_glimpse(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int = 12,
    num_scales: int = 4,
    scale_factor: float = 2.0,
    mode: str = "area",
    base_size: float | None = None,
) -> torch.Tensor:
    """Peer 4: ``torchvision.ops.roi_align`` over the ``B * num_scales`` boxes in one call.

    With ``aligned=True`` a box's corners are in pixel-edge coordinates, as the fused op's squares.
    ``bilinear`` takes one sample per cell, at its centre (``sampling_ratio=1``); ``area`` averages
    ``ceil(cell side)`` x ``ceil(cell side)`` evenly spaced samples (``sampling_ratio=-1``), which is
    the exact cell mean where cells are whole pixels. Either way the result equals the fused op where
    every sample lies inside the image; within one pixel outside, roi_align repeats the border pixel
    where the fused op reads zeros. Differentiable with respect to images only.

    Returns:
        (B, num_scales * C, size, size), scale-major.
    """
    from torchvision.ops import roi_align

    _require_mode("roi_align_glimpse", mode, MODES)
    batch, channels, height, width = images.shape
    half = images.new_tensor(scale_sides(size, num_scales, scale_factor, base_size)) / 2  # (S,)
    centre = (locations.to(images.dtype) + 1) * images.new_tensor([width / 2, height / 2])  # (B, 2)
    index = torch.arange(batch, dtype=images.dtype, device=images.device)
    boxes = torch.stack(
        [
            index[:, None].expand(batch, num_scales),
            centre[:, 0, None] - half,
            centre[:, 1, None] - half,
            centre[:, 0, None] + half,
            centre[:, 1, None] + half,
        ],
        dim=-1,
    ).reshape(batch * num_scales, 5)
    sampling_ratio = 1 if mode == "bilinear" else -1
    out = roi_align(images, boxes, (size, size), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    return out.reshape(batch, num_scales * channels, size, size)


@dataclass(frozen=True)
class Peer:
    """A benchmarked implementation: ``fn`` has the fused op's signature.

    ``modes``: the modes it implements; ``location_grad``: whether it differentiates with respect
    to locations (all differentiate with respect to images).
    """

    name: str
    fn: GlimpseFn
    modes: tuple[str, ...]
    location_grad: bool


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer("naive_crop", naive_crop, MODES, False),
        Peer("grid_sample_per_scale", grid_sample_per_scale, ("bilinear",), True),
        Peer("grid_sample_vectorised", grid_sample_vectorised, ("bilinear",), True),
        Peer("coverage_einsum", coverage_einsum, ("area",), True),
        Peer("roi_align", roi_align_glimpse, MODES, False),
        Peer("fused", retina_glimpse, MODES, True),
    )
}
"""Every implementation the suite compares, by name; ``"fused"`` is the operator under test."""
