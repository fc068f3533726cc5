"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no custom classes),
so that loading one can never execute code:

* ``format``: :data:`FORMAT`, to tell a gdram checkpoint from any other file;
* ``model``: the model's ``state_dict``; ``config``: ``dataclasses.asdict`` of its ``GDRAMConfig``;
* ``optimizer``, ``scheduler``: their ``state_dict``; ``epoch``: epochs completed;
* ``rng``: generator states as uint8 tensors (torch CPU, CUDA, numpy, Python ``random``);
* ``train``: the trainer's settings; ``metrics``: the history so far;
* ``best_accuracy``, ``best_epoch``: the best validation top-1 so far and its epoch.

:func:`save_checkpoint` writes through :func:`gdram.files.atomic_write`, so a crash at any moment
leaves either the old or the new file, both readable.
"""

from __future__ import annotations

import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gdram.files import atomic_write

FORMAT = "gdram-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, unsafe or not a gdram checkpoint; the message names it."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only, ...); the previous one is intact."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (plus the ``format`` tag) to ``path`` atomically; returns the path.

    Raises:
        CheckpointWriteError: the file could not be written; its message names ``path``, and the
            checkpoint previously at ``path`` (if any) is left intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as file:
            torch.save({"format": FORMAT, **state}, file)
    except OSError as error:
        kept = "the previous checkpoint there is intact" if path.is_file() else "no checkpoint was there before"
        raise CheckpointWriteError(f"{path}: could not write the checkpoint ({_reason(error)}); {kept}") from error
    return path


def _reason(error: OSError) -> str:
    """``strerror`` of an ``OSError`` (without the file name it may carry), else its text."""
    return error.strerror or str(error) or type(error).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, never executing code from the file.

    Raises:
        CheckpointError: the file is missing, truncated, holds objects other than tensors and
            plain containers, or is not a gdram checkpoint.
    """
    state = load_state_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gdram checkpoint (no '{FORMAT}' format tag)")
    missing = [key for key in ("model", "config", "epoch") if key not in state]
    if missing:
        raise CheckpointError(f"{path}: gdram checkpoint lacks {', '.join(missing)}")
    return state


def load_state_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with a :class:`CheckpointError` naming the file on failure."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; give a checkpoint file, such as {path / 'best.pt'}")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file (a device, pipe or socket); give a checkpoint file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):  # a real object the safe unpickler refuses, not garbage
            raise CheckpointError(
                f"{path}: refused to load, it holds objects other than tensors and plain data "
                "(loading it could execute code)"
            ) from None
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint (UnpicklingError)") from None
    except MemoryError:
        raise CheckpointError(
            f"{path}: truncated or not a PyTorch checkpoint (it asks for more memory than there is)"
        ) from None
    except Exception as error:  # a damaged file can fail anywhere inside the unpickler
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({type(error).__name__})") from None
    for warning in caught:  # torch's warnings about a file it then fails to read are noise; a good file's are kept
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return state


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain data (safe for ``weights_only`` loading)."""
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": _python_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"].tolist()), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _python_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}
