"""Cluttered translated digits (the RAM paper's task) and the embedded ``cluttered-digits`` sets.

:func:`generate_cluttered` puts one digit at a random position on a large blank canvas and adds
``num_clutter`` square fragments cut from other digits at random positions; it takes its digits
from any source (MNIST, scikit-learn's digits, your own). It lays the images out first
(:func:`layout_clutter`: a few seeded integers per image) and then draws them (:func:`render_clutter`),
so a set too large to store can keep its layout and draw any batch again on demand
(:mod:`gdram.data.canvas`). :func:`cluttered_digits` builds the embedded data sets from the 1,797
handwritten 8x8 digits that scikit-learn ships with its package, so they need no network
(:data:`EMBEDDED_SPECS`): ``cluttered-digits`` (the default) upscales each digit to 28x28 (MNIST's
scale) and puts it at a random position on a 64x64 canvas with 4 fragments of 10x10 from other
digits of the same split; ``cluttered-digits-128`` uses the paper's 128x128 canvas with 8 fragments
of 12x12. Both make 8 placements of each of the 1,200 training digits, 2 of each of the 297
validation and 300 test digits, and record every digit's box. Their splits are made by *source
digit* (:func:`embedded_sources`): a handwritten digit of the test split never appears, in any
position or as clutter, in the training split. The digit covers a fifth of the 64x64 canvas and
under a twentieth of the 128x128 one, so a glimpse must find it: the policy matters (README, "Does
it learn?").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gdram.files import DAMAGED_NPZ, atomic_write


@dataclass(frozen=True)
class ClutterSpec:
    """How a cluttered image is made.

    Attributes:
        canvas_size: side of the square canvas, in pixels.
        digit_size: side of the pasted digit, in pixels (the source digit is resized to it).
        num_clutter: number of clutter fragments (``k``).
        fragment_size: side of each square clutter fragment, in pixels.
    """

    canvas_size: int = 128
    digit_size: int = 28
    num_clutter: int = 8
    fragment_size: int = 12

    def __post_init__(self) -> None:
        for name in ("canvas_size", "digit_size", "fragment_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClutterSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_clutter < 0:
            raise ValueError(f"ClutterSpec.num_clutter must be >= 0, got {self.num_clutter}")
        if self.digit_size > self.canvas_size:
            raise ValueError(f"digit_size {self.digit_size} exceeds canvas_size {self.canvas_size}")
        if self.fragment_size > min(self.digit_size, self.canvas_size):
            raise ValueError(f"fragment_size {self.fragment_size} exceeds digit_size {self.digit_size}")


def resize_digits(digits: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """Resize grayscale digits to ``size x size`` (bilinear, anti-aliased) and scale them to 0-255.

    Args:
        digits: (N, h, w), any real dtype; the maximum over the whole array maps to 255.

    Returns:
        (N, size, size) uint8.
    """
    tensor = torch.as_tensor(np.asarray(digits), dtype=torch.float32)
    if tensor.ndim != 3:
        raise ValueError(f"digits must have shape (N, h, w), got {tuple(tensor.shape)}")
    peak = float(tensor.max()) if tensor.numel() else 1.0
    tensor = tensor / (peak if peak > 0 else 1.0)
    if tuple(tensor.shape[1:]) != (size, size):
        tensor = F.interpolate(tensor[:, None], size=(size, size), mode="bilinear", antialias=True)[:, 0]
    return (tensor.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


_RENDER_CHUNK = 1024  # images drawn at once by generate_cluttered (bounds its index tensors)


@dataclass(frozen=True)
class ClutterLayout:
    """Where every cluttered image's digit and fragments go: a few bytes per fragment, no pixels.

    Attributes:
        sources: (N,) index of each image's digit among the digits.
        positions: (N, 2) top-left corner (y, x) of each image's digit on the canvas.
        fragment_sources: (N, K) index of each fragment's digit among the clutter digits.
        fragment_crops: (N, K, 2) top-left corner (y, x) of each fragment inside its clutter digit.
        fragment_positions: (N, K, 2) top-left corner (y, x) of each fragment on the canvas.

    All are integer tensors of the smallest dtype that holds their range (uint8, int16 or int32).
    """

    sources: torch.Tensor
    positions: torch.Tensor
    fragment_sources: torch.Tensor
    fragment_crops: torch.Tensor
    fragment_positions: torch.Tensor

    def __len__(self) -> int:
        return len(self.sources)

    def nbytes(self) -> int:
        """Bytes the layout's tensors hold."""
        return sum(tensor.nbytes for tensor in vars(self).values())


def layout_clutter(
    num_digits: int, num_clutter_digits: int, num_images: int, spec: ClutterSpec, seed: int
) -> ClutterLayout:
    """The seeded layout of ``num_images`` cluttered images (see :func:`generate_cluttered`).

    Image ``i`` shows digit ``i % num_digits`` at a random position, with ``spec.num_clutter`` fragments
    cut at random from random clutter digits; only ``seed`` and the arguments decide it.
    """
    rng = np.random.default_rng(seed)
    canvas, size, frag = spec.canvas_size, spec.digit_size, spec.fragment_size
    shape = (num_images, spec.num_clutter)
    drawn = (
        (np.arange(num_images) % num_digits, num_digits),
        (rng.integers(0, canvas - size + 1, size=(num_images, 2)), canvas),
        (rng.integers(0, num_clutter_digits, size=shape), num_clutter_digits),
        (rng.integers(0, size - frag + 1, size=(*shape, 2)), size),
        (rng.integers(0, canvas - frag + 1, size=(*shape, 2)), canvas),
    )
    return ClutterLayout(*(_compact(values, bound) for values, bound in drawn))


def _compact(values: np.ndarray, bound: int) -> torch.Tensor:
    """``values`` (all in ``[0, bound)``) as a tensor of the smallest of uint8, int16, int32 that holds them."""
    dtype = next(dtype for dtype in (np.uint8, np.int16, np.int32) if bound - 1 <= np.iinfo(dtype).max)
    return torch.from_numpy(values.astype(dtype))


def render_clutter(
    layout: ClutterLayout, indices: torch.Tensor, digits: torch.Tensor, clutter: torch.Tensor, spec: ClutterSpec
) -> torch.Tensor:
    """Draw the images ``indices`` (B,) of ``layout``: fragments of ``clutter`` (M, d, d) uint8, then the
    digits ``digits`` (N, d, d) uint8; overlaps keep the brighter pixel, so the order does not matter.

    Returns:
        (B, S, S) uint8, ``S = spec.canvas_size``.
    """
    side = spec.canvas_size
    canvas = torch.zeros(len(indices), side * side, dtype=torch.uint8)
    _paste(
        canvas,
        clutter,
        layout.fragment_sources[indices],
        layout.fragment_crops[indices],
        layout.fragment_positions[indices],
        spec.fragment_size,
        side,
    )
    origin = torch.zeros(len(indices), 1, 2, dtype=torch.long)
    _paste(
        canvas, digits, layout.sources[indices, None], origin, layout.positions[indices, None], spec.digit_size, side
    )
    return canvas.view(len(indices), side, side)


def _paste(
    canvas: torch.Tensor,
    sources: torch.Tensor,
    which: torch.Tensor,
    crops: torch.Tensor,
    positions: torch.Tensor,
    piece: int,
    side: int,
) -> None:
    """Paste, keeping the brighter pixel, the ``piece x piece`` squares of ``sources`` (M, d, d) that
    ``which`` (B, K) and ``crops`` (B, K, 2) name at ``positions`` (B, K, 2) of ``canvas`` (B, side * side)."""
    steps = torch.arange(piece)
    rows, cols = (crops[..., axis, None].long() + steps for axis in (0, 1))  # (B, K, piece) each
    pieces = sources[which.long()[..., None, None], rows[..., :, None], cols[..., None, :]]  # (B, K, piece, piece)
    ys, xs = (positions[..., axis, None].long() + steps for axis in (0, 1))
    targets = ys[..., :, None] * side + xs[..., None, :]
    canvas.scatter_reduce_(1, targets.flatten(1), pieces.flatten(1), reduce="amax")


def digit_boxes(layout: ClutterLayout, digits: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, 4) float32 box of each image's digit: x0, y0, x1, y1 in canvas pixels (pixel i spans [i, i + 1)),
    the tight box of the digit's non-zero pixels (the whole pasted square for a blank digit)."""
    tight = torch.tensor([_tight_box(np.asarray(digit)) for digit in digits], dtype=torch.float32).view(-1, 4)
    yx = layout.positions.float()
    return tight[layout.sources.long()] + yx.flip(1).repeat(1, 2)


def generate_cluttered(
    digits: np.ndarray,
    labels: np.ndarray,
    num_images: int,
    spec: ClutterSpec,
    seed: int,
    clutter_digits: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make ``num_images`` cluttered images and the box of each one's digit, deterministic in ``seed``.

    Image ``i`` shows digit ``i % N`` (so every source digit is used equally often) at a random
    position, with ``spec.num_clutter`` fragments cut at random from random ``clutter_digits``;
    overlaps keep the brighter pixel (:func:`layout_clutter`, then :func:`render_clutter`).

    Args:
        digits: (N, digit_size, digit_size) uint8, the digits to classify (see :func:`resize_digits`).
        labels: (N,) integer class of each digit.
        num_images: number of images to make.
        spec: canvas, digit and clutter geometry.
        seed: seed of the positions and fragments.
        clutter_digits: (M, digit_size, digit_size) uint8 source of the fragments; ``digits`` if None.

    Returns:
        images (num_images, canvas_size, canvas_size) uint8, labels (num_images,) int64 and boxes
        (num_images, 4) float32: x0, y0, x1, y1 in pixels (pixel i spans [i, i + 1)), the tight box
        of the digit's non-zero pixels (the whole pasted square for a blank digit).
    """
    digits = np.asarray(digits)
    clutter = digits if clutter_digits is None else np.asarray(clutter_digits)
    expected = (spec.digit_size, spec.digit_size)
    for name, array in (("digits", digits), ("clutter_digits", clutter)):
        if array.ndim != 3 or array.shape[1:] != expected or array.dtype != np.uint8:
            raise ValueError(
                f"{name} must be uint8 of shape (N, {spec.digit_size}, {spec.digit_size}), "
                f"got {array.dtype} {array.shape}"
            )
        if len(array) == 0:
            raise ValueError(f"{name} is empty")
    if len(labels) != len(digits):
        raise ValueError(f"{len(labels)} labels for {len(digits)} digits")
    layout = layout_clutter(len(digits), len(clutter), num_images, spec, seed)
    images = torch.empty(num_images, spec.canvas_size, spec.canvas_size, dtype=torch.uint8)
    digit_pixels, clutter_pixels = torch.as_tensor(digits), torch.as_tensor(clutter)
    for chunk in torch.arange(num_images).split(_RENDER_CHUNK):
        images[chunk] = render_clutter(layout, chunk, digit_pixels, clutter_pixels, spec)
    sources = layout.sources.long().numpy()
    return images.numpy(), np.asarray(labels, dtype=np.int64)[sources], digit_boxes(layout, digits).numpy()


def _tight_box(digit: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the non-zero pixels of a (s, s) digit, the whole square if it is blank."""
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    if len(rows) == 0:
        return 0, 0, digit.shape[1], digit.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass(frozen=True)
class EmbeddedSpec:
    """Parameters of the embedded ``cluttered-digits`` set (they key its on-disk cache).

    Attributes:
        clutter: canvas, digit and fragment geometry.
        train_placements: cluttered images made from each training digit.
        eval_placements: cluttered images made from each validation/test digit.
        val_digits: source digits held out for validation.
        test_digits: source digits held out for test.
        seed: seed of the split and of the generator.
    """

    clutter: ClutterSpec = ClutterSpec(canvas_size=64, digit_size=28, num_clutter=4, fragment_size=10)
    train_placements: int = 8
    eval_placements: int = 2
    val_digits: int = 297
    test_digits: int = 300
    seed: int = 0


def split_by_source(labels: np.ndarray, val: int, test: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified split of the source-digit indices into disjoint, sorted train/val/test index arrays."""
    from sklearn.model_selection import train_test_split

    if val < 1 or test < 1 or val + test >= len(labels):
        raise ValueError(f"cannot hold out {val} + {test} of {len(labels)} digits")
    indices = np.arange(len(labels))
    rest, test_idx = train_test_split(indices, test_size=test, stratify=labels, random_state=seed)
    train_idx, val_idx = train_test_split(rest, test_size=val, stratify=labels[rest], random_state=seed + 1)
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def cache_dir() -> Path:
    """Where generated data sets are cached: ``$GDRAM_CACHE`` or ``~/.cache/gdram``."""
    return Path(os.environ.get("GDRAM_CACHE", Path.home() / ".cache" / "gdram"))


EMBEDDED_SPECS = {
    "cluttered-digits": EmbeddedSpec(),
    "cluttered-digits-128": EmbeddedSpec(
        clutter=ClutterSpec(canvas_size=128, digit_size=28, num_clutter=8, fragment_size=12)
    ),
}


def cache_path(spec: EmbeddedSpec) -> Path:
    """The cache file of the embedded data set made with ``spec`` (in :func:`cache_dir`)."""
    key = hashlib.sha256(json.dumps({**asdict(spec), "boxes": 1}, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"cluttered-digits-{key}.npz"


def check_cache(spec: EmbeddedSpec) -> None:
    """Refuse, before the data is built, a cache that holds no entry for ``spec`` and cannot take one.

    Raises:
        OSError: naming the cache folder and ``$GDRAM_CACHE``.
    """
    path = cache_path(spec)
    if path.is_file():
        return
    existing = next(folder for folder in (path.parent, *path.parent.parents) if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(
            errno.EACCES,
            f"the data cache cannot be written ({existing} is not a writable folder); set GDRAM_CACHE "
            "to a writable folder",
            str(path.parent),
        )


_CACHE_ARRAYS = {f"{kind}_{split}" for kind in ("x", "y", "box") for split in ("train", "val", "test")}


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache entry, or None when it is missing, truncated, damaged or incomplete."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except DAMAGED_NPZ:
        return None
    return arrays if set(arrays) == _CACHE_ARRAYS else None


def cluttered_digits(spec: EmbeddedSpec = EmbeddedSpec(), cache: bool = True) -> dict[str, np.ndarray]:
    """The embedded data set, built from scikit-learn's digits (cached on disk, keyed by ``spec``).

    A cache entry that is truncated, damaged or incomplete is rebuilt and replaced.

    Returns:
        ``x_train, y_train, x_val, y_val, x_test, y_test``: images (N, 1, S, S) uint8, labels (N,)
        int64, and ``box_train, box_val, box_test``: (N, 4) float32 digit boxes (x0, y0, x1, y1, pixels).

    Raises:
        OSError: the cache cannot be written; the message names it and ``$GDRAM_CACHE``.
    """
    path = cache_path(spec)
    if cache:
        arrays = _read_cache(path)
        if arrays is not None:
            return arrays
    arrays = _build_cluttered_digits(spec)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb") as file:
                np.savez(file, **arrays)
        except OSError as error:
            raise OSError(
                error.errno,
                f"cannot write the data cache ({error.strerror or error}); set GDRAM_CACHE to a writable folder",
                str(path),
            ) from None
    return arrays


def _build_cluttered_digits(spec: EmbeddedSpec) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for source in embedded_sources(spec):
        images, targets, boxes = generate_cluttered(
            source.digits, source.labels, len(source.digits) * source.placements, spec.clutter, seed=source.seed
        )
        name = source.split
        arrays[f"x_{name}"], arrays[f"y_{name}"], arrays[f"box_{name}"] = images[:, None], targets, boxes
    return arrays


@dataclass(frozen=True)
class SourceSplit:
    """One split's source digits and how many images to make of each (see :func:`embedded_sources`).

    Attributes:
        split: ``"train"``, ``"val"`` or ``"test"``.
        digits: (N, d, d) uint8 the split's digits, resized to the spec's ``digit_size``.
        labels: (N,) int64 their classes.
        indices: (N,) their indices among scikit-learn's 1,797 digits.
        placements: images made of each digit.
        seed: seed of the split's layout.
    """

    split: str
    digits: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    placements: int
    seed: int


def embedded_sources(spec: EmbeddedSpec) -> list[SourceSplit]:
    """scikit-learn's digits split by source digit (:func:`split_by_source`), train, val, test in order."""
    from sklearn.datasets import load_digits

    source = load_digits()
    labels = source.target.astype(np.int64)
    digits = resize_digits(source.images, spec.clutter.digit_size)
    parts = split_by_source(labels, spec.val_digits, spec.test_digits, spec.seed)
    placements = (spec.train_placements, spec.eval_placements, spec.eval_placements)
    return [
        SourceSplit(split, digits[idx], labels[idx], idx, count, seed=spec.seed * 1000 + offset + 1)
        for offset, (split, idx, count) in enumerate(zip(("train", "val", "test"), parts, placements, strict=True))
    ]
