"""Tiny models and data sets the gdram tests share (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gdram.cli.main import main
from gdram.data.datasets import DataSplits, TensorImages
from gdram.models.config import GDRAMConfig

# A small GDRAM of the paper's recipe (5 classes, 32x32 RGB images, 3 glimpses of 2 scales of 8x8, width 16).
SMALL = {
    "num_classes": 5,
    "image_size": 32,
    "glimpse_size": 8,
    "num_scales": 2,
    "num_glimpses": 3,
    "hidden_size": 16,
    "glimpse_channels": (8, 16),
    "context_channels": 8,
    "mlp_hidden_size": 16,
    "cnn_pool_size": 2,
    "recipe": "paper",
}

# `gdram train` flags of a model that trains in a second on 24x24 images.
TINY_MODEL = ["--glimpses", "2", "--glimpse-size", "8", "--scales", "2", "--hidden-size", "16"]


def train_tiny(data: str, out: Path | None, *extra: str) -> int:
    """``gdram train`` of the tiny model on ``data`` for one epoch into ``out`` (None: the default run directory)."""
    where = [] if out is None else ["--out", str(out)]
    return main(["train", "--data", data, "--epochs", "1", "--batch-size", "8", *where, "--quiet", *TINY_MODEL, *extra])


def one_error_line(capsys, *fragments: str) -> str:
    """The command's one error line on stderr (no traceback), holding every fragment."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("gdram ") and "error: " in line]
    assert "Traceback" not in err and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def write_npz(
    path: Path,
    classes: int = 3,
    train_classes: int | None = None,
    size: int = 24,
    boxes: tuple[float, float, float, float] | None = None,
) -> str:
    """A .npz of 40 random (size x size) grey images, 24 train / 8 val / 8 test, labels cycling over ``classes``
    (over ``train_classes`` in the training split), every image with target box ``boxes`` if given."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, size, size), dtype=np.uint8)
    labels = np.arange(40) % classes
    train = labels[:24] % (train_classes or classes)
    arrays = {
        "x_train": images[:24],
        "y_train": train,
        "x_val": images[24:32],
        "y_val": labels[24:32],
        "x_test": images[32:],
        "y_test": labels[32:],
    }
    if boxes is not None:
        box = np.tile(np.asarray(boxes, dtype=np.float64), (40, 1))
        arrays.update(box_train=box[:24], box_val=box[24:32], box_test=box[32:])
    np.savez(path, **arrays)
    return str(path)


def tiny_config(variant: str = "gdram", image_size: int = 24) -> GDRAMConfig:
    """A GDRAM-family model of 3 classes on 1-channel images: 3 glimpses of 2 scales of 8x8, width 16."""
    return GDRAMConfig(
        num_classes=3,
        in_channels=1,
        image_size=image_size,
        glimpse_size=8,
        num_scales=2,
        num_glimpses=3,
        hidden_size=16,
        glimpse_channels=(4, 8),
        context_channels=4,
        mlp_hidden_size=16,
        variant=variant,
    )


def tiny_data(count: int = 48, size: int = 24, classes: int = 3) -> DataSplits:
    """Class k: a bright 6x6 square in a class-dependent corner of a dim noisy image."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % classes
    images = (torch.rand(count, 1, size, size, generator=generator) * 60).to(torch.uint8)
    for index, label in enumerate(labels.tolist()):
        top, left = (2, 2 + 7 * label)
        images[index, 0, top : top + 6, left : left + 6] = 255
    train, val = count * 2 // 3, count * 5 // 6
    parts = [TensorImages(images[s], labels[s]) for s in (slice(0, train), slice(train, val), slice(val, count))]
    return DataSplits("tiny", *parts, num_classes=classes, in_channels=1, image_size=(size, size))


def quadrant_images(labels: torch.Tensor, quadrants: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
    """64x64 images of four 32 px quadrants, each holding a 24 px square (4 px from the quadrant's sides).

    The square in ``quadrants`` (N,) is a 4 px bright frame around 16 px of 2 px stripes, horizontal for
    label 0 and vertical for label 1 (``labels`` (N,)); the others are flat, of the grey levels ``grey``
    (N, 4). Downscaled 4x (the whole image at a 16 px base) the stripes average to a flat 0.5 and the class
    is gone; downscaled 2x (a quadrant at 16 px) they are 1 px stripes. Returns (N, 1, 64, 64).
    """
    count = labels.shape[0]
    stripes = (torch.arange(16) // 2 % 2).float()
    horizontal, vertical = stripes[:, None].expand(16, 16), stripes[None, :].expand(16, 16)
    target = torch.ones(count, 24, 24)
    target[:, 4:20, 4:20] = torch.where(labels[:, None, None] == 0, horizontal, vertical)
    chosen = (torch.arange(4) == quadrants[:, None])[:, :, None, None]
    squares = torch.where(chosen, target[:, None], grey[:, :, None, None].expand(count, 4, 24, 24))
    tiles = F.pad(squares, (4, 4, 4, 4))  # (N, 4, 32, 32)
    return tiles.view(count, 2, 2, 32, 32).permute(0, 1, 3, 2, 4).reshape(count, 1, 64, 64)


def quadrant_task(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` random :func:`quadrant_images`: (images (N, 1, 64, 64), labels (N,), quadrants (N,))."""
    labels = torch.randint(0, 2, (count,), generator=generator)
    quadrants = torch.randint(0, 4, (count,), generator=generator)
    grey = 0.2 + 0.8 * torch.rand(count, 4, generator=generator)
    return quadrant_images(labels, quadrants, grey), labels, quadrants


def write_quadrant_npz(path: Path, count: int = 768, seed: int = 0, dark: bool = False) -> str:
    """A .npz of :func:`quadrant_task` images (train 2/3, val and test 1/6 each), the striped square's box recorded;
    ``dark``: the other quadrants black, so that the striped square is each image's salient place."""
    images, labels, quadrants = quadrant_task(count, torch.Generator().manual_seed(seed))
    if dark:
        images = quadrant_images(labels, quadrants, torch.zeros(count, 4))
    left, top = quadrants % 2 * 32 + 4, quadrants // 2 * 32 + 4
    boxes = torch.stack((left, top, left + 24, top + 24), dim=1).double().numpy()
    pixels = (images[:, 0] * 255).round().to(torch.uint8).numpy()
    train, val = count * 2 // 3, count * 5 // 6
    parts = {"train": slice(0, train), "val": slice(train, val), "test": slice(val, count)}
    arrays = {}
    for split, part in parts.items():
        arrays.update({f"x_{split}": pixels[part], f"y_{split}": labels[part].numpy(), f"box_{split}": boxes[part]})
    np.savez(path, **arrays)
    return str(path)
