"""What a loaded data set is: in-memory images, the train/val/test splits, and their batches.

:class:`DataSplits` is what :func:`gdram.data.loading.load_data` returns and what the trainer reads: train/val/test
data sets that yield ``(image (C, H, W) float in [0, 1], label)`` plus what the model must be told (number of
classes, channels, image size). Small sets live in memory as uint8 tensors (:class:`TensorImages`); large generated
ones are drawn on demand (:class:`~gdram.data.canvas.CanvasImages`). Both are :class:`BatchedImages`, which
:func:`batches` reads a batch at a time, with no per-item Python work; other data sets go through a ``DataLoader``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset


class DataError(ValueError):
    """A data set cannot be read or is malformed; the message names the file and what is wrong."""


class BatchedImages(Dataset, ABC):
    """A data set that makes a whole batch at once, with its labels and target boxes at hand.

    Attributes:
        labels: (N,) int64.
        stored_boxes: (N, 4) float32 target boxes x0, y0, x1, y1 in pixels of the stored images, or None.
        image_size: (H, W) of the images it returns.
    """

    labels: torch.Tensor
    stored_boxes: torch.Tensor | None
    image_size: tuple[int, int]

    @property
    @abstractmethod
    def stored_size(self) -> tuple[int, int]:
        """(H, W) of the stored (or drawn) images, before any resizing to ``image_size``."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.batch(torch.tensor([index]))
        return images[0], int(labels[0])

    @abstractmethod
    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) float32 in [0, 1] and labels (B,) int64 at ``indices`` (B,)."""

    def boxes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, 4) float32 boxes at ``indices``, in pixels of the returned image size; NaN when unknown."""
        if self.stored_boxes is None:
            return torch.full((len(indices), 4), float("nan"))
        height, width = self.stored_size
        out_height, out_width = self.image_size
        scale = torch.tensor([out_width / width, out_height / height] * 2)
        return self.stored_boxes[indices] * scale

    @abstractmethod
    def with_boxes(self, boxes: torch.Tensor | None) -> BatchedImages:
        """The same images and labels with ``boxes`` (N, 4) (pixels of the stored images) as target boxes."""


class TensorImages(BatchedImages):
    """Images held in memory, resized (optionally) batch by batch.

    Args:
        images: (N, C, H, W) uint8 (0-255) or float (0-1).
        labels: (N,) int64.
        image_size: (H', W') to resize to when read, or None to keep (H, W).
        boxes: (N, 4) float32 target boxes in pixels of (H, W), or None when unknown.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        image_size: tuple[int, int] | None = None,
        boxes: torch.Tensor | None = None,
    ):
        self.images, self.labels, self.stored_boxes = images, labels, boxes
        self.image_size = tuple(image_size) if image_size is not None else tuple(images.shape[-2:])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H', W') float32 in [0, 1] and labels (B,) int64 at ``indices`` (B,)."""
        images = self.images[indices]
        images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", antialias=True).clamp_(0, 1)
        return images, self.labels[indices]

    @property
    def stored_size(self) -> tuple[int, int]:
        """(H, W) of the stored images."""
        return tuple(self.images.shape[-2:])

    def with_boxes(self, boxes: torch.Tensor | None) -> TensorImages:
        """The same images and labels with ``boxes`` (N, 4) (pixels of the stored images) as target boxes."""
        return TensorImages(self.images, self.labels, self.image_size, boxes)


@dataclass
class DataSplits:
    """Train/val/test data sets and what the model needs to know about them."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]

    def describe(self) -> str:
        """One line: name, sizes of the splits, classes and image shape."""
        height, width = self.image_size
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
            f"{self.num_classes} classes, {self.in_channels}x{height}x{width}"
        )


def batches(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
    boxes: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield ``(images (B, C, H, W) float32, labels (B,) int64)`` over this rank's share of ``dataset``,
    with ``boxes`` also the target boxes (B, 4) float32 in pixels (NaN rows where unknown).

    The order is a permutation seeded by ``seed`` (pass e.g. ``seed + epoch``), identical on every
    rank; rank ``r`` of ``world_size`` takes every ``world_size``-th index. When shuffling (training),
    the order is padded by repetition so that every rank gets the same number of batches.
    """
    order = (
        torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        if shuffle
        else torch.arange(len(dataset))
    )
    if shuffle and world_size > 1 and len(order) % world_size:
        order = torch.cat([order, order[: world_size - len(order) % world_size]])
    order = order[rank::world_size]
    if isinstance(dataset, BatchedImages):
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            items = (*dataset.batch(indices), dataset.boxes(indices)) if boxes else dataset.batch(indices)
            yield tuple(item.pin_memory() for item in items) if pin_memory else items
        return
    loader = DataLoader(
        Subset(dataset, order.tolist()), batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory
    )
    for images, labels in loader:
        yield (images, labels.long(), torch.full((len(labels), 4), float("nan"))) if boxes else (images, labels.long())


def num_batches(dataset: Dataset, batch_size: int, shuffle: bool = False, world_size: int = 1) -> int:
    """How many batches :func:`batches` yields on one rank (for progress bars)."""
    size = len(dataset)
    per_rank = -(-size // world_size) if shuffle else size // world_size + (1 if size % world_size else 0)
    return -(-per_rank // batch_size)
