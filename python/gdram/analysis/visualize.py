"""Glimpse pictures: the trajectory of a GDRAM over its images, like Fig. 2 of the paper.

Each tile shows an image with, for every glimpse t, the square covered by each retina scale, the
path joining the glimpse centres (a dot per glimpse, its radius growing with the glimpse's weight
w_t, which is printed beside it), and a caption ``label -> prediction``. A correct prediction is
drawn in green, a wrong one in red. :func:`draw_grid` makes one PNG-ready image of all tiles;
:func:`draw_frames` makes one frame per glimpse for an animated GIF (:func:`save_picture`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from gdram.models.gdram import GDRAM
from gdram_ext.contract import scale_sides

CORRECT = (40, 220, 60)
WRONG = (235, 50, 50)
PATH = (255, 220, 0)
GAP = 4  # pixels between tiles
MAX_PICTURE_PIXELS = 1 << 26  # over all frames: about 200 MB of RGB, whatever the zoom and image count


def glimpse_sides(model: GDRAM) -> list[float]:
    """Side, in pixels, of the square each retina scale covers (smallest first)."""
    config = model.config
    return scale_sides(config.glimpse_size, config.num_scales, config.scale_factor, config.retina_base_size)


@torch.no_grad()
def trajectories(model: GDRAM, images: torch.Tensor, fast: bool = False) -> dict[str, torch.Tensor]:
    """Run ``model`` (eval mode) on ``images`` (B, C, H, W) and return, on the CPU: ``locations``
    (T, B, 2) in [-1, 1], ``weights`` (T, B), ``glimpses_used`` (B,), ``predictions`` (B,)."""
    if not isinstance(model, GDRAM):
        raise ValueError(f"only attention models have glimpses to draw, not {type(model).__name__}")
    model.eval()
    result = model(images, fast=fast)
    return {
        "locations": result.locations.cpu(),
        "weights": result.weights.cpu(),
        "glimpses_used": result.glimpses_used.cpu(),
        "predictions": result.logits.argmax(1).cpu(),
    }


def to_picture(image: torch.Tensor, zoom: int) -> Image.Image:
    """(C, H, W) float in [0, 1] -> RGB PIL image ``zoom`` times larger (nearest neighbour)."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    array = array.expand(3, -1, -1) if array.shape[0] == 1 else array[:3]
    picture = Image.fromarray(array.permute(1, 2, 0).contiguous().numpy(), "RGB")
    return picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST)


def draw_tile(
    image: torch.Tensor,
    locations: torch.Tensor,
    weights: torch.Tensor,
    sides: list[float],
    label: int,
    prediction: int,
    steps: int,
    zoom: int = 2,
    class_names: list[str] | None = None,
) -> Image.Image:
    """One image (C, H, W) with its first ``steps`` glimpses (``locations`` (T, 2), ``weights`` (T,))."""
    tile = to_picture(image, zoom).convert("RGBA")
    overlay = Image.new("RGBA", tile.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    height, width = image.shape[-2:]
    colour = CORRECT if label == prediction else WRONG
    centres = [((float(x) + 1) / 2 * width * zoom, (float(y) + 1) / 2 * height * zoom) for x, y in locations[:steps]]
    for t, (cx, cy) in enumerate(centres):
        alpha = int(90 + 165 * (t + 1) / len(centres))
        for side in sides:
            half = side * zoom / 2
            draw.rectangle((cx - half, cy - half, cx + half, cy + half), outline=(*colour, alpha), width=1)
    if len(centres) > 1:
        draw.line(centres, fill=(*PATH, 255), width=2)
    font = ImageFont.load_default()
    for t, (cx, cy) in enumerate(centres):
        radius = 1.5 + 3 * float(weights[t])
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(*PATH, 255))
        draw.text((cx + radius + 1, cy - 5), f"{float(weights[t]):.2f}", fill=(255, 255, 255, 230), font=font)
    names = class_names or [str(index) for index in range(max(label, prediction) + 1)]
    draw.rectangle((0, 0, tile.width, 13), fill=(0, 0, 0, 170))
    draw.text((3, 1), f"{names[label]} -> {names[prediction]}", fill=(*colour, 255), font=font)
    return Image.alpha_composite(tile, overlay).convert("RGB")


def picture_size(count: int, image_size: tuple[int, int], zoom: int) -> tuple[int, int]:
    """(width, height) in pixels of the grid of ``count`` tiles of ``image_size`` (H, W) images at ``zoom``."""
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width = image_size
    return columns * width * zoom + (columns - 1) * GAP, rows * height * zoom + (rows - 1) * GAP


def check_picture_size(count: int, image_size: tuple[int, int], zoom: int, frames: int = 1) -> None:
    """Refuse a picture of more than :data:`MAX_PICTURE_PIXELS` pixels over its ``frames`` frames.

    Raises:
        ValueError: the picture is too large; the message gives the largest zoom that fits.
    """
    if not isinstance(zoom, int) or isinstance(zoom, bool) or zoom < 1:
        raise ValueError(f"zoom must be a positive integer, got {zoom!r}")
    width, height = picture_size(count, image_size, zoom)
    if width * height * frames <= MAX_PICTURE_PIXELS:
        return
    low, high = 0, zoom  # the largest zoom that fits lies in [low, high): 0 means none
    while high - low > 1:
        middle = (low + high) // 2
        fits = math.prod(picture_size(count, image_size, middle)) * frames <= MAX_PICTURE_PIXELS
        low, high = (middle, high) if fits else (low, middle)
    advice = f"use a zoom of at most {low}" if low else "draw fewer images"
    shown = f"{width}x{height} pixels" + (f" x {frames} frames" if frames > 1 else "")
    raise ValueError(f"the picture would be {shown}, over the limit of {MAX_PICTURE_PIXELS:,} pixels: {advice}")


def tile_grid(tiles: list[Image.Image], columns: int, gap: int = GAP) -> Image.Image:
    rows = math.ceil(len(tiles) / columns)
    width, height = tiles[0].size
    sheet = Image.new("RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), (60, 60, 60))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, ((index % columns) * (width + gap), (index // columns) * (height + gap)))
    return sheet


def _frames(
    model: GDRAM,
    images: torch.Tensor,
    labels: torch.Tensor,
    fast: bool,
    zoom: int,
    class_names: list[str] | None,
    last_only: bool,
) -> list[Image.Image]:
    """Frame t of the grid shows glimpses 1..t; ``last_only`` draws only the final frame."""
    found = trajectories(model, images, fast)
    sides = glimpse_sides(model)
    steps = found["locations"].shape[0]
    check_picture_size(len(images), tuple(images.shape[-2:]), zoom, 1 if last_only else steps)
    columns = math.ceil(math.sqrt(len(images)))
    frames = []
    for shown in range(steps if last_only else 1, steps + 1):
        tiles = [
            draw_tile(
                images[i].cpu(),
                found["locations"][:, i],
                found["weights"][:, i],
                sides,
                int(labels[i]),
                int(found["predictions"][i]),
                min(shown, int(found["glimpses_used"][i])),
                zoom,
                class_names,
            )
            for i in range(len(images))
        ]
        frames.append(tile_grid(tiles, columns))
    return frames


def draw_frames(
    model: GDRAM,
    images: torch.Tensor,
    labels: torch.Tensor,
    fast: bool = False,
    zoom: int = 2,
    class_names: list[str] | None = None,
) -> list[Image.Image]:
    """Grids of ``images`` (B, C, H, W) with ``labels`` (B,): frame t shows glimpses 1..t (T frames)."""
    return _frames(model, images, labels, fast, zoom, class_names, last_only=False)


def draw_grid(
    model: GDRAM,
    images: torch.Tensor,
    labels: torch.Tensor,
    fast: bool = False,
    zoom: int = 2,
    class_names: list[str] | None = None,
) -> Image.Image:
    """One grid of ``images`` (B, C, H, W) with every glimpse each image used."""
    return _frames(model, images, labels, fast, zoom, class_names, last_only=True)[0]


def save_picture(frames: list[Image.Image], path: str | Path, frame_ms: int = 600) -> Path:
    """Save the last frame as PNG, or every frame as a looping animated GIF (by ``path``'s suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".gif"):
        raise ValueError(f"{path}: the picture must be a .png or .gif file")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        frames[-1].save(path, optimize=True)
    else:
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, optimize=True)
    return path
