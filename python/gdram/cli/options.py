"""Plumbing of the ``gdram`` command line: checked option types, help with defaults, error lines.

Option types raise ``argparse.ArgumentTypeError``, so that argparse names the flag in its usage
error (``argument --epochs: must be a positive integer, got '0'``). :func:`error_line` turns an
exception into the single line the CLI prints; :func:`write_traceback` keeps the full traceback of
an unexpected error in a file, whose path that line gives.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import NoReturn

from gdram.data.imagefiles import MAX_IMAGE_SIDE


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _integer(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text!r}")
    return value


def unit_fraction(text: str) -> float:
    """A number from 0 to 1, both included."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text!r}")
    return value


def image_size(text: str) -> tuple[int, int]:
    """``"128"`` or ``"96x128"`` (H x W) -> (H, W), each side in [1, :data:`MAX_IMAGE_SIDE`]."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {text!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW with positive sides, got {text!r}")
    if max(parts) > MAX_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f"image sides are limited to {MAX_IMAGE_SIDE} pixels, got {text!r}")
    return (parts[0], parts[-1])


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (N an installed GPU)."""
    import torch

    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return text


def _integer(text: str, lowest: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < lowest:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit 2), without the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless it has no default or already names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def error_line(error: BaseException) -> str:
    """The exception as one line: an ``OSError`` as ``file: reason``, other messages with newlines folded."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: the original error is the last line
        text = re.sub(r"^[\w.]+: ", "", text.strip().splitlines()[-1])
    return " ".join(text.split())


def write_traceback(error: BaseException, directory: Path | None) -> Path | None:
    """Write ``error``'s full traceback to ``directory`` (when it exists) or the temporary directory.

    The file is created exclusively under an unpredictable name (``gdram-error-<time>-<random>.txt``,
    mode 0600, :func:`tempfile.mkstemp`), so a link planted in a shared temporary folder can neither
    redirect the write nor be followed. Returns the file, or None if it could not be written either place.
    """
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    prefix = f"gdram-error-{time.strftime('%Y%m%d-%H%M%S')}-"
    for folder in (directory, Path(tempfile.gettempdir())):
        if folder is None or not folder.is_dir():
            continue
        try:
            handle, name = tempfile.mkstemp(prefix=prefix, suffix=".txt", dir=folder)
        except OSError:
            continue
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
        except OSError:
            Path(name).unlink(missing_ok=True)
            continue
        return Path(name)
    return None
