"""Where the glimpses go: target boxes, the oracle's run and the attention metrics.

Boxes are (B, 4) x0, y0, x1, y1 in pixels of the model's (H, W) input (pixel i spans [i, i + 1)),
NaN rows where a sample's target is unknown. Locations are (x, y) in [-1, 1] (the retina's
convention: -1 the left/top edge, +1 the right/bottom edge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gdram.models.gdram import GlimpseResult
from gdram.models.tnet import TNetResult

BORDER_TOLERANCE = 1e-4  # a glimpse this close to the location clip counts as on the border
# The sums of glimpse_counts, in its order.
GLIMPSE_COUNTS = ("hits", "box_distance_px", "with_box", "on_border", "glimpses")


def box_centres(boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """(B, 4) boxes -> (B, 2) their centres (x, y) in [-1, 1] coordinates (NaN where unknown)."""
    height, width = image_hw
    return torch.stack(((boxes[:, 0] + boxes[:, 2]) / width - 1, (boxes[:, 1] + boxes[:, 3]) / height - 1), dim=1)


COARSE_WINDOW = 6  # pixels of the window on the downscaled image of a coarse salient place


def salient_locations(images: torch.Tensor, window: int, coarse: bool = False) -> torch.Tensor:
    """(B, 2) the most salient place of each image (B, C, H, W), in [-1, 1]: the peak of the local contrast
    ``|x - the image's median|`` (summed over channels) averaged over a ``window`` x ``window`` square. No boxes;
    on dark-background data such as the cluttered digits it is the densest blob of ink of the window's size.

    The window's mean costs ``window ** 2`` per pixel; ``coarse`` finds the peak on the image area-downscaled
    by ``window // COARSE_WINDOW`` first (a ``COARSE_WINDOW``-pixel window there), exact to that factor.
    """
    factor = max(1, window // COARSE_WINDOW) if coarse else 1
    if factor > 1:
        images, window = F.avg_pool2d(images.float(), factor, ceil_mode=True), max(1, round(window / factor))
    height, width = images.shape[-2:]
    with torch.no_grad():
        flat = images.float().flatten(2)
        contrast = (flat - flat.median(dim=2, keepdim=True).values).abs().sum(1).view(-1, 1, height, width)
        before, after = window // 2, window - 1 - window // 2
        density = F.avg_pool2d(F.pad(contrast, (before, after, before, after)), window, stride=1)[:, 0]
        index = density.flatten(1).argmax(1)
        y, x = (index // width).to(images.dtype) + 0.5, (index % width).to(images.dtype) + 0.5
        return torch.stack((x / width * 2 - 1, y / height * 2 - 1), dim=1)


def run_policy(
    model: nn.Module, images: torch.Tensor, boxes: torch.Tensor | None, fast: bool = False, sample: bool | None = None
) -> GlimpseResult:
    """``model(images)`` under its ``config.policy``: the oracle looks at the centre of each image's box (B, 4).

    ``model`` may be wrapped (``DistributedDataParallel``, ``torch.compile``).
    """
    config = model.module.config if hasattr(model, "module") else model.config
    if config.policy != "oracle":
        return model(images, fast=fast, sample=sample)
    if boxes is None or not bool(torch.isfinite(boxes).all()):
        raise ValueError("the oracle policy needs every image's target box (box_* arrays in the data)")
    return model(images, fast=fast, locations=box_centres(boxes.to(images), config.image_hw))


def glimpse_counts(
    result: GlimpseResult, boxes: torch.Tensor, image_hw: tuple[int, int], location_bound: torch.Tensor | None
) -> torch.Tensor:
    """Sums over the glimpses a batch used: (5,) float64, :data:`GLIMPSE_COUNTS`.

    * hits: glimpses whose centre lies in the sample's box;
    * pixel distance: summed distance, in pixels, from the glimpse centre to the box centre;
    * with box: glimpses of samples whose box is known (the denominator of the two above);
    * on border: glimpses on the location clip (``location_bound``, (2,): |x| or |y| within
      :data:`BORDER_TOLERANCE` of it); none when ``location_bound`` is None (no moves);
    * glimpses: glimpses used (the denominator of the border share).

    Args:
        result: a forward's result; its ``weights > 0`` mark the glimpses used.
        boxes: (B, 4) target boxes in pixels, NaN rows when unknown.
        image_hw: (H, W) of the model's input.
        location_bound: (2,) the model's location clip, or None.
    """
    height, width = image_hw
    locations = result.locations.detach().double()  # (T, B, 2)
    used = result.weights.detach() > 0  # (T, B)
    boxes = boxes.to(locations)
    known = torch.isfinite(boxes).all(dim=1)  # (B,)
    pixel_x = (locations[..., 0] + 1) / 2 * width
    pixel_y = (locations[..., 1] + 1) / 2 * height
    inside = (pixel_x >= boxes[:, 0]) & (pixel_x <= boxes[:, 2]) & (pixel_y >= boxes[:, 1]) & (pixel_y <= boxes[:, 3])
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    distance = torch.hypot(pixel_x - centre_x, pixel_y - centre_y)
    counted = used & known  # (T, B)
    if location_bound is None:
        border = torch.zeros_like(used)
    else:
        border = (locations.abs() >= location_bound.to(locations) - BORDER_TOLERANCE).any(dim=2) & used
    return torch.stack(
        [
            (inside & counted).sum().double(),
            torch.where(counted, distance, torch.zeros_like(distance)).sum(),
            counted.sum().double(),
            border.sum().double(),
            used.sum().double(),
        ]
    ).cpu()


def cell_counts(result: TNetResult, boxes: torch.Tensor, image_size: int, level: int | None = None) -> torch.Tensor:
    """TNet's :data:`GLIMPSE_COUNTS` over the cells a batch chose (every level after the first): (5,) float64.

    A chosen cell hits when the target box's centre lies inside it; the distance runs from the cell's centre
    to the box's; no cell is on a border (the cells lie inside the image by construction).

    Args:
        result: a TNet forward's result; ``centres[l]`` (B, M_l, 2) in [-1, 1], ``sides[l]`` (B, M_l) pixels.
        boxes: (B, 4) target boxes in pixels of the (S, S) input, NaN rows when unknown.
        image_size: S.
        level: count only the cells of this level (2 .. L, 1-based as in the paper); None: every level's.
    """
    chosen = slice(1, None) if level is None else slice(level - 1, level)
    if len(result.centres[chosen]) == 0 or level == 1:
        return torch.zeros(5, dtype=torch.float64)
    centres = torch.cat(result.centres[chosen], dim=1).detach().double()  # (B, M, 2)
    half = torch.cat(result.sides[chosen], dim=1).detach().double() / 2  # (B, M)
    boxes = boxes.to(centres)
    known = torch.isfinite(boxes).all(dim=1)[:, None].expand_as(half)  # (B, M)
    pixels = (centres + 1) / 2 * image_size
    target = torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), dim=1)[:, None, :]
    offset = pixels - target  # (B, M, 2)
    inside = (offset.abs() <= half[..., None]).all(dim=2)
    distance = torch.hypot(offset[..., 0], offset[..., 1])
    return torch.stack(
        [
            (inside & known).sum().double(),
            torch.where(known, distance, torch.zeros_like(distance)).sum(),
            known.sum().double(),
            torch.zeros((), dtype=torch.float64),
            torch.tensor(float(known.numel()), dtype=torch.float64),
        ]
    ).cpu()


def attention_metrics(counts: torch.Tensor) -> dict[str, float | None]:
    """``hit_rate``, ``box_distance_px`` and ``border_share`` from summed :func:`glimpse_counts` (None: unknown)."""
    hits, distance, with_box, border, glimpses = (float(value) for value in counts)
    return {
        "hit_rate": hits / with_box if with_box else None,
        "box_distance_px": distance / with_box if with_box else None,
        "border_share": border / glimpses if glimpses else None,
    }
