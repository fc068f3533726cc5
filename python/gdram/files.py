"""Files written atomically: a temporary file beside the target, flushed to disk, renamed over it.

A crash at any moment leaves either the old file or the new one, both whole. The temporary file
is ``.<name>.<pid>.tmp``; one left behind by a process killed while writing is deleted by
:func:`remove_stale_temporaries` when the next run starts. ``DAMAGED_NPZ`` names what reading a damaged
``.npz`` back can raise, for the readers that must turn it into one line.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# What np.load raises on a truncated or damaged .npz: a bad CRC, a broken zip directory, zipfile's RuntimeError for a
# flipped compression method or encryption flag, a bad .npy header (numpy parses its text with ast and tokenize and
# unpacks its fields with struct).
DAMAGED_NPZ = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    KeyError,
    TypeError,
    IndexError,
    OverflowError,
    RuntimeError,
    struct.error,
    tokenize.TokenError,
    zipfile.BadZipFile,
    zlib.error,
)

_TEMPORARY = re.compile(r"\..+\.(\d+)\.tmp")  # .last.pt.<pid>.tmp, written by atomic_write


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing (``mode`` ``"w"`` or ``"wb"``); on a clean exit flush it to
    disk and rename it over ``path``. On any error the temporary file is deleted and ``path`` is untouched."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, mode, newline=newline) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as file:
        file.write(text)


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def check_writable_place(folder: Path, what: str) -> None:
    """Refuse ``folder`` (``what`` names it in the message) when it is a file, lies below one, or cannot be
    created or written.

    Raises:
        ValueError: naming ``what`` and the place that is not a writable directory.
    """
    existing = next(place for place in (folder, *folder.parents) if place.exists())
    if not existing.is_dir():
        raise ValueError(f"{what}: {existing} exists and is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: cannot write in {existing} (read-only or no permission)")


def is_temporary(name: str) -> bool:
    """Whether a file name is that of an :func:`atomic_write` temporary (``.<name>.<pid>.tmp``)."""
    return _TEMPORARY.fullmatch(name) is not None


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` calls of processes no longer running (left by
    a run killed while writing) in ``directory``; returns the deleted paths."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for candidate in sorted(directory.iterdir()):
        match = _TEMPORARY.fullmatch(candidate.name)
        if match and candidate.is_file() and not _running(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _running(pid: int) -> bool:
    """Whether another process with this id is alive (this process is starting, so its own files are stale)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process, or no valid process id at all
        return False
    except PermissionError:  # another user's live process
        return True
    return True
