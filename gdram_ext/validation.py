"""Argument checks shared by every backend, so that bad input fails the same way everywhere.

``check_arguments`` checks a retina glimpse call, ``check_box_arguments`` a box glimpse call.

They read only metadata (shapes, dtypes, devices, Python numbers): never a device value, so
they cost no host-device synchronisation and trace cleanly under ``torch.compile``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from gdram_ext.contract import MODES, base_side

IMAGE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_arguments(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int,
    num_scales: int,
    scale_factor: float,
    mode: str,
    base_size: float | None,
) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first bad argument of a retina glimpse call."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not isinstance(locations, torch.Tensor):
        raise TypeError(f"locations must be a torch.Tensor, got {type(locations).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if images.dtype not in IMAGE_DTYPES:
        raise TypeError(f"images must be float32, float64, float16 or bfloat16, got {images.dtype}")
    if locations.dim() != 2 or locations.shape[1] != 2:
        raise ValueError(f"locations must have shape (B, 2), got {tuple(locations.shape)}")
    if not locations.is_floating_point():
        raise TypeError(f"locations must have a floating dtype, got {locations.dtype}")
    if locations.shape[0] != images.shape[0]:
        raise ValueError(
            f"images and locations must have the same batch size, got {images.shape[0]} and {locations.shape[0]}"
        )
    if locations.device != images.device:
        raise ValueError(f"images and locations must be on the same device, got {images.device} and {locations.device}")
    if images.shape[1] < 1 or images.shape[2] < 1 or images.shape[3] < 1:
        raise ValueError(f"images must have C, H and W of at least 1, got {tuple(images.shape)}")
    check_hyperparameters(size, num_scales, scale_factor, mode, base_size)


def check_hyperparameters(size: int, num_scales: int, scale_factor: float, mode: str, base_size: float | None) -> None:
    """Raise ``ValueError`` naming the first bad hyper-parameter of a retina glimpse (no tensors involved)."""
    if not _integer(size) or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    if not _integer(num_scales) or num_scales < 1:
        raise ValueError(f"num_scales must be an integer >= 1, got {num_scales!r}")
    if not _positive_number(scale_factor):
        raise ValueError(f"scale_factor must be a finite number > 0, got {scale_factor!r}")
    if base_size is not None and not _positive_number(base_size):
        raise ValueError(f"base_size must be None or a finite number > 0, got {base_size!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        last = base_side(size, base_size) * float(scale_factor) ** (num_scales - 1)
    except OverflowError:
        last = math.inf
    if not (math.isfinite(last) and last > 0):
        raise ValueError(
            f"the last scale's side, base_size * scale_factor ** (num_scales - 1) = {last}, must be finite and > 0"
        )


def check_box_arguments(
    images: torch.Tensor,
    centres: torch.Tensor,
    sides: torch.Tensor,
    size: int | Sequence[int],
    mode: str,
) -> tuple[int, int]:
    """Raise ``TypeError``/``ValueError`` naming the first bad argument of a box glimpse call.

    Returns:
        ``(h, w)``: the output cells per box (rows, columns), as Python ints.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not isinstance(centres, torch.Tensor):
        raise TypeError(f"centres must be a torch.Tensor, got {type(centres).__name__}")
    if not isinstance(sides, torch.Tensor):
        raise TypeError(f"sides must be a torch.Tensor, got {type(sides).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if images.dtype not in IMAGE_DTYPES:
        raise TypeError(f"images must be float32, float64, float16 or bfloat16, got {images.dtype}")
    if centres.dim() != 3 or centres.shape[2] != 2:
        raise ValueError(f"centres must have shape (B, K, 2), got {tuple(centres.shape)}")
    if not centres.is_floating_point():
        raise TypeError(f"centres must have a floating dtype, got {centres.dtype}")
    if not (sides.dim() == 2 or (sides.dim() == 3 and sides.shape[2] == 2)):
        raise ValueError(f"sides must have shape (B, K) or (B, K, 2), got {tuple(sides.shape)}")
    if not sides.is_floating_point():
        raise TypeError(f"sides must have a floating dtype, got {sides.dtype}")
    if centres.shape[0] != images.shape[0] or sides.shape[0] != images.shape[0]:
        raise ValueError(
            "images, centres and sides must have the same batch size, "
            f"got {images.shape[0]}, {centres.shape[0]} and {sides.shape[0]}"
        )
    if sides.shape[1] != centres.shape[1]:
        raise ValueError(
            f"centres and sides must have the same number of boxes K, got {centres.shape[1]} and {sides.shape[1]}"
        )
    if centres.device != images.device:
        raise ValueError(f"images and centres must be on the same device, got {images.device} and {centres.device}")
    if sides.device != images.device:
        raise ValueError(f"images and sides must be on the same device, got {images.device} and {sides.device}")
    if images.shape[1] < 1 or images.shape[2] < 1 or images.shape[3] < 1:
        raise ValueError(f"images must have C, H and W of at least 1, got {tuple(images.shape)}")
    output = box_output_size(size)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return output


def box_output_size(size: object) -> tuple[int, int]:
    """``(h, w)`` from a box glimpse's ``size``: an integer >= 1 (h = w) or a pair of them (rows, columns).

    Raises ``ValueError`` naming ``size`` otherwise (bools, floats, strings, other lengths).
    """
    if _integer(size) and size >= 1:
        return int(size), int(size)
    pair = isinstance(size, Sequence) and not isinstance(size, (str, bytes)) and len(size) == 2
    if pair and all(_integer(value) and value >= 1 for value in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be an integer >= 1 or a pair (h, w) of them, got {size!r}")


def _integer(value: object) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_number(value: object) -> bool:
    """A finite, positive Python or NumPy real number, not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and value > 0
