"""TNet pictures: the cells each level chose, drawn nested on the image.

Each tile shows an image with the boxes TNet read after the whole image: level 2's cells in the first colour
of :data:`LEVEL_COLOURS`, the cells chosen inside them (level 3) in the next, and so on, with the caption
``label -> prediction`` (green when right, red when wrong). :func:`draw_cells` makes one grid of all tiles;
:func:`draw_cell_frames` one frame per level (frame l shows levels 2..l) for an animated GIF.
"""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw, ImageFont

from gdram.analysis.visualize import CORRECT, WRONG, check_picture_size, tile_grid, to_picture
from gdram.models.tnet import TNet, TNetResult

LEVEL_COLOURS = ((255, 220, 0), (0, 200, 255), (255, 80, 220), (255, 140, 0))


@torch.no_grad()
def chosen_cells(model: TNet, images: torch.Tensor) -> tuple[TNetResult, torch.Tensor]:
    """Run ``model`` (eval mode: the top k cells) on ``images`` (B, C, S, S); the result and (B,) predictions."""
    if not isinstance(model, TNet):
        raise ValueError(f"only a TNet has cells to draw, not {type(model).__name__}")
    model.eval()
    result = model(images)
    return result, result.logits.argmax(1).cpu()


def draw_cell_tile(
    image: torch.Tensor,
    centres: list[torch.Tensor],
    sides: list[torch.Tensor],
    label: int,
    prediction: int,
    levels_shown: int,
    zoom: int = 1,
) -> Image.Image:
    """One image (C, S, S) with the boxes of levels 2..``levels_shown``: ``centres[l]`` (M_l, 2) in [-1, 1],
    ``sides[l]`` (M_l,) pixels, level 1 (the whole image) first."""
    tile = to_picture(image, zoom).convert("RGBA")
    overlay = Image.new("RGBA", tile.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    size = image.shape[-1]
    for level in range(1, min(levels_shown, len(centres))):
        colour = LEVEL_COLOURS[(level - 1) % len(LEVEL_COLOURS)]
        width = max(1, 3 - level + 1)
        for (x, y), side in zip(centres[level].tolist(), sides[level].tolist(), strict=True):
            cx, cy, half = (x + 1) / 2 * size * zoom, (y + 1) / 2 * size * zoom, side * zoom / 2
            draw.rectangle((cx - half, cy - half, cx + half, cy + half), outline=(*colour, 255), width=width)
    colour = CORRECT if label == prediction else WRONG
    draw.rectangle((0, 0, tile.width, 13), fill=(0, 0, 0, 170))
    draw.text((3, 1), f"{label} -> {prediction}", fill=(*colour, 255), font=ImageFont.load_default())
    return Image.alpha_composite(tile, overlay).convert("RGB")


def draw_cell_frames(model: TNet, images: torch.Tensor, labels: torch.Tensor, zoom: int = 1) -> list[Image.Image]:
    """Grids of ``images`` (B, C, S, S) with ``labels`` (B,): frame l shows the cells of levels 2..l + 1."""
    levels = model.config.levels
    check_picture_size(len(images), tuple(images.shape[-2:]), zoom, max(1, levels - 1))
    result, predictions = chosen_cells(model, images)
    centres = [level.cpu() for level in result.centres]
    sides = [level.cpu() for level in result.sides]
    columns = math.ceil(math.sqrt(len(images)))
    return [
        tile_grid(
            [
                draw_cell_tile(
                    images[i].cpu(),
                    [level[i] for level in centres],
                    [level[i] for level in sides],
                    int(labels[i]),
                    int(predictions[i]),
                    shown,
                    zoom,
                )
                for i in range(len(images))
            ],
            columns,
        )
        for shown in range(2 if levels > 1 else 1, levels + 1)
    ]


def draw_cells(model: TNet, images: torch.Tensor, labels: torch.Tensor, zoom: int = 1) -> Image.Image:
    """One grid of ``images`` (B, C, S, S) with every level's chosen cells."""
    return draw_cell_frames(model, images, labels, zoom)[-1]
