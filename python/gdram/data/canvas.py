"""The embedded high-resolution set ``cluttered-digits-512``: cluttered digits drawn on demand, never stored.

Made like ``cluttered-digits-128`` (:mod:`gdram.data.cluttered`): the same 1,797 scikit-learn digits,
upscaled to 28x28 (MNIST's scale), the same split by *source digit* (1,200 train / 297 val / 300 test
digits, 8 placements of each training digit, 2 of each other), clutter cut only from digits of the
same split, and every digit's box recorded. The canvas is 512x512 with 96 fragments of 14x14:

* the clutter covers about 7% of the canvas (96 * 14^2 / 512^2), the density of ``cluttered-digits-128``
  (8 * 12^2 / 128^2), so the canvas is as busy at full size as the paper's; seen whole at 64x64 (an
  8x8 grid of 64-pixel cells), a cell holds 1.5 fragments on average and only about one in five is
  empty, so the coarse view shows many blobs, one of which is the digit;
* the digit is 28 pixels high: 14 pixels at a 2x downscale (readable), 3.5 pixels on the whole image
  downscaled to 64x64 (a blob): a classifier must attend, then look closer. Class means of the
  validation split classify 78% of the test digits from a 16x16 window around the digit at 256x256,
  11% (chance) from the whole image at 64x64, and 38% even from a 4x4 window on the digit at 64x64.

A 512x512 image is 256 KiB; the set's 10,794 images would take 2.8 GB. :class:`CanvasImages` stores
each image's layout instead (:class:`~gdram.data.cluttered.ClutterLayout`: digit, position and 96
fragments, about 800 bytes) and the split's source digits (784 bytes each), and draws a batch of
canvases when it is read, always the same one for an index: the layout is made once from the spec's
seed, with no global random state.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from gdram.data.cluttered import (
    ClutterLayout,
    ClutterSpec,
    EmbeddedSpec,
    SourceSplit,
    digit_boxes,
    embedded_sources,
    layout_clutter,
    render_clutter,
)
from gdram.data.datasets import BatchedImages, DataError, DataSplits

CANVAS_SPECS = {
    "cluttered-digits-512": EmbeddedSpec(
        clutter=ClutterSpec(canvas_size=512, digit_size=28, num_clutter=96, fragment_size=14)
    ),
}
NUM_CLASSES = 10
RESIZE_CHUNK = 64  # canvases drawn at full size at once when resizing (bounds the float32 copies: 64 MiB at 512)


class CanvasImages(BatchedImages):
    """Cluttered digits drawn batch by batch from their layout; no image is stored.

    Args:
        digits: (M, d, d) uint8, the split's source digits; the clutter is cut from them too.
        digit_labels: (M,) integer class of each digit.
        layout: the N images' layout (:func:`~gdram.data.cluttered.layout_clutter`), indexing ``digits``
            for both the digits and the fragments.
        spec: canvas, digit and fragment geometry of ``layout``.
        image_size: (H, W) to area-resize the canvases to when read, or None to keep (S, S).
    """

    def __init__(
        self,
        digits: np.ndarray | torch.Tensor,
        digit_labels: np.ndarray | torch.Tensor,
        layout: ClutterLayout,
        spec: ClutterSpec,
        image_size: tuple[int, int] | None = None,
    ):
        self.digits = torch.as_tensor(digits)
        self.layout, self.spec = layout, spec
        self.labels = torch.as_tensor(digit_labels, dtype=torch.int64)[layout.sources.long()]
        self.stored_boxes = digit_boxes(layout, self.digits)
        self.image_size = tuple(image_size) if image_size is not None else self.stored_size

    @property
    def stored_size(self) -> tuple[int, int]:
        """(S, S): the size the canvases are drawn at."""
        return self.spec.canvas_size, self.spec.canvas_size

    def nbytes(self) -> int:
        """Bytes the data set's tensors hold: digits, layout, labels and boxes."""
        return self.layout.nbytes() + sum(tensor.nbytes for tensor in (self.digits, self.labels, self.stored_boxes))

    def canvases(self, indices: torch.Tensor) -> torch.Tensor:
        """The full-size canvases at ``indices`` (B,): (B, S, S) uint8."""
        return render_clutter(self.layout, indices, self.digits, self.digits, self.spec)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 1, H, W) float32 in [0, 1] and labels (B,) int64 at ``indices`` (B,).

        At full size, a canvas's pixels divided by 255; resized, the area average of its pixels divided
        by 255 (drawn :data:`RESIZE_CHUNK` canvases at a time).
        """
        if self.image_size == self.stored_size:
            return self.canvases(indices)[:, None].float().div_(255), self.labels[indices]
        images = torch.empty(len(indices), 1, *self.image_size)
        for start in range(0, len(indices), RESIZE_CHUNK):
            chunk = self.canvases(indices[start : start + RESIZE_CHUNK])[:, None].float()
            images[start : start + len(chunk)] = F.interpolate(chunk, size=self.image_size, mode="area").div_(255)
        return images, self.labels[indices]

    def with_boxes(self, boxes: torch.Tensor | None) -> CanvasImages:
        """The same images and labels with ``boxes`` (N, 4) (pixels of the canvas) as target boxes."""
        copied = copy.copy(self)
        copied.stored_boxes = boxes
        return copied


def load_canvases(name: str, image_size: tuple[int, int] | None = None, num_classes: int | None = None) -> DataSplits:
    """The embedded set ``name`` (a key of :data:`CANVAS_SPECS`), drawn on demand.

    Args:
        name: the set's name.
        image_size: (H, W) to area-resize its canvases to, or None for the canvas size.
        num_classes: number of classes; None (or 10) for the digits' 10.

    Raises:
        DataError: ``num_classes`` is below 10.
    """
    if num_classes is not None and num_classes < NUM_CLASSES:
        raise DataError(f"{name} has labels 0-{NUM_CLASSES - 1}, but num_classes is {num_classes}")
    spec = CANVAS_SPECS[name]
    side = spec.clutter.canvas_size
    splits = [_split_images(source, spec.clutter, image_size) for source in embedded_sources(spec)]
    return DataSplits(name, *splits, num_classes or NUM_CLASSES, 1, image_size or (side, side))


def _split_images(source: SourceSplit, spec: ClutterSpec, image_size: tuple[int, int] | None) -> CanvasImages:
    """The images of one split: ``source.placements`` of each of its digits, clutter from its digits only."""
    count = len(source.digits)
    layout = layout_clutter(count, count, count * source.placements, spec, source.seed)
    return CanvasImages(source.digits, source.labels, layout, spec, image_size)
