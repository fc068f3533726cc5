"""Data files checked for what they are: ``.npz`` archives by their first bytes, image files by PIL.

:func:`require_npz` names what a file given as ``--data`` really is (an image, a ``.npy`` array,
...) instead of NumPy's puzzling error. :func:`check_images` opens every image of a folder before a
run starts (headers only), and :func:`read_image`, the image folders' loader, names the file that
fails to decode later; both raise :class:`~gdram.data.DataError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from gdram.data.datasets import DataError

MAX_IMAGE_SIDE = 4096  # --image-size: a batch of 128 RGB images of 4096^2 already takes 26 GB
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x93NUMPY": "a .npy file (one array)",
    b"\x1f\x8b": "a gzip file",
    b"\x80": "a pickle file",
    b"BM": "a BMP image",
}


def describe(head: bytes) -> str:
    """What a file starting with ``head`` is, in a few words (for error messages)."""
    if not head:
        return "an empty file"
    for signature, kind in _SIGNATURES.items():
        if head.startswith(signature):
            return kind
    return "no zip archive"


def require_npz(path: Path) -> None:
    """Raise ``DataError`` unless ``path`` starts like a zip archive, as ``.npz`` files do.

    An unreadable or missing file passes: ``np.load`` reports it.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(8)
    except OSError:
        return
    if not head.startswith(b"PK"):
        raise DataError(
            f"{path}: not a readable .npz file, it is {describe(head)}; --data takes a .npz file "
            "(x_train, y_train, x_test, y_test) or an ImageFolder directory"
        )


def read_image(path: str) -> Image.Image:
    """The image at ``path``, decoded (the loader of image folders).

    Raises:
        DataError: the file is not an image PIL can decode; the message names it.
    """
    try:
        image = Image.open(path)
        image.load()
    except _UNREADABLE as error:
        raise DataError(f"{path}: unreadable image ({error})") from None
    return image


def check_images(paths: Iterable[str], folder: str | Path) -> list[tuple[str, tuple[int, int], str]]:
    """Open (headers only) every image in ``paths``, so that a bad file stops the run before it starts.

    Returns:
        ``(path, (height, width), PIL mode)`` of every image, in order.

    Raises:
        DataError: naming the first unreadable file and how many there are in ``folder``.
    """
    unreadable, headers = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                headers.append((path, (image.height, image.width), image.mode))
        except _UNREADABLE as error:
            unreadable.append((path, error))
    if unreadable:
        path, error = unreadable[0]
        more = f" (and {len(unreadable) - 1} more in {folder})" if len(unreadable) > 1 else ""
        raise DataError(f"{path}: unreadable image ({error}){more}; remove or replace it")
    return headers


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL modes without colour
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # integer pixels of 16 bits (0-65535)


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` as 8-bit ``"L"`` or ``"RGB"``; 16-bit pixels are scaled to 0-255, not clipped to white."""
    if image.mode in WIDE_MODES:
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    return image.convert(mode)
