"""The run directory's files, written by one writer (rank 0 of a run): every file atomically.

``config.json`` (the model, the training settings and the data), ``last.pt`` and ``best.pt``
(:mod:`gdram.training.checkpoint`), ``metrics.jsonl`` and ``metrics.csv`` (one row per epoch, rewritten
from the whole history so a resumed run has no stale rows), ``learning_curve.png``,
``summary.json``, and ``tensorboard/`` when TensorBoard is installed.

A run directory belongs to one run at a time: :func:`lock_run_dir` takes an exclusive ``flock`` on
its ``.gdram.lock`` file (holding the owner's process id), which the kernel drops when the owner
ends, however it ends, so a killed run never leaves a stale lock. :class:`RunFiles` takes it when
the run starts, unless this process already holds it; :func:`claim_new_run_dir` creates a fresh
directory exclusively, so that two runs started in the same second never share one. Within an
epoch ``best.pt`` is written before ``last.pt``: an interruption between the two leaves a ``best.pt``
ahead of ``last.pt``, which :meth:`gdram.training.trainer.Trainer.resume` adopts, never a ``last.pt`` that
names a best epoch ``best.pt`` does not hold.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from gdram.files import atomic_write, is_temporary, write_json, write_text
from gdram.training.checkpoint import save_checkpoint
from gdram.training.plots import plot_learning_curve

LOCK_NAME = ".gdram.lock"
# What a run writes in its directory (besides the lock and the temporaries of gdram.files.atomic_write).
RUN_FILES = (
    "config.json",
    "last.pt",
    "best.pt",
    "metrics.jsonl",
    "metrics.csv",
    "learning_curve.png",
    "summary.json",
    "tensorboard",
)


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is a gdram run's ``config.json`` (a JSON object with ``model``, ``train`` and ``data``)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and {"model", "train", "data"} <= set(value)


def foreign_entries(run_dir: Path) -> list[str]:
    """The names in the existing folder ``run_dir`` that no gdram run writes, sorted: all of them (but
    the lock and stale temporaries) unless it holds a gdram ``config.json``."""
    names = sorted(
        entry.name for entry in run_dir.iterdir() if not (entry.name == LOCK_NAME or is_temporary(entry.name))
    )
    if not names or not is_run_config(run_dir / "config.json"):
        return names
    return [name for name in names if name not in RUN_FILES and not _is_traceback_file(name)]


def _is_traceback_file(name: str) -> bool:
    return name.startswith("gdram-error-") and name.endswith(".txt")  # gdram.cli.options.write_traceback's


class RunDirError(ValueError):
    """A run directory is owned by another running process; the message names it and that process."""


class RunLock:
    """This process's ownership of a run directory (see :func:`lock_run_dir`); a context manager.

    Attributes:
        run_dir: the directory.
        created: the directories :func:`lock_run_dir` created for it, outermost first; :meth:`release`
            removes those left empty, so a run that stops before writing anything leaves nothing.
    """

    def __init__(self, run_dir: Path, created: list[Path]) -> None:
        self.run_dir, self.created = run_dir, created
        self._released = False

    def release(self) -> None:
        """Give the directory up (the last of this process's holds removes the lock file); idempotent."""
        if self._released:
            return
        self._released = True
        key = _lock_key(self.run_dir)
        held = _HELD.get(key)
        if held is not None:
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                (self.run_dir / LOCK_NAME).unlink(missing_ok=True)  # unlink while locked: no one waits on it
                os.close(held[0])
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote there
                break

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


_HELD: dict[str, list[int]] = {}  # resolved run directory -> [lock file descriptor, holds in this process]


def _lock_key(run_dir: Path) -> str:
    return str(run_dir.resolve())


def lock_run_dir(run_dir: str | Path, create: bool = True, new: bool = False) -> RunLock:
    """Own ``run_dir`` for this process: an exclusive ``flock`` on ``run_dir/.gdram.lock``.

    Args:
        run_dir: the run directory.
        create: create it (and its missing parents) if it does not exist.
        new: it must not exist yet: created with an exclusive ``mkdir`` (``FileExistsError`` otherwise).

    A second call of the same process nests (the lock is dropped by the last :meth:`RunLock.release`).

    Raises:
        RunDirError: another process holds the lock; the message names its process id.
        OSError: the directory or the lock file cannot be created.
    """
    run_dir = Path(run_dir)
    created: list[Path] = []
    if new or (create and not run_dir.exists()):
        missing = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
        for folder in reversed(missing[1:]):
            folder.mkdir(exist_ok=True)
            created.append(folder)
        run_dir.mkdir(exist_ok=not new)
        created.append(run_dir)
    key = _lock_key(run_dir)
    if key in _HELD:
        _HELD[key][1] += 1
        return RunLock(run_dir, created)
    try:
        descriptor = _acquire(run_dir / LOCK_NAME, run_dir)
    except BaseException:
        RunLock(run_dir, created).release()
        raise
    _HELD[key] = [descriptor, 1]
    return RunLock(run_dir, created)


def _acquire(path: Path, run_dir: Path) -> int:
    """The descriptor of ``path``, exclusively flock-ed and holding this process's id."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise RunDirError(
                f"{run_dir} is in use by another gdram run (process {owner}); wait for it to end, "
                "or choose another run directory"
            ) from None
        try:  # the previous owner may have removed the file between our open and our lock: lock the new one
            current = os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(descriptor).st_ino:
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
            return descriptor
        os.close(descriptor)


def claim_new_run_dir(base: str | Path) -> RunLock:
    """Create and lock a run directory that did not exist: ``base``, else ``base-2``, ``base-3``, ..."""
    base = Path(base)
    for number in range(1, 1000):
        candidate = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            return lock_run_dir(candidate, new=True)
        except FileExistsError:
            continue
    raise RunDirError(f"{base}: 999 run directories of that name exist already; pass --out")


class RunFiles:
    """Writes the files of the run in ``run_dir``; :meth:`close` ends the TensorBoard log and gives
    the directory's lock up."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._writer = None
        self._lock: RunLock | None = None

    def start(self, description: dict[str, Any]) -> None:
        """Create and lock the directory (:func:`lock_run_dir`) and write ``config.json``
        (``{"model": ..., "train": ..., "data": ...}``)."""
        if self._lock is None:
            self._lock = lock_run_dir(self.run_dir)
        write_json(self.run_dir / "config.json", description)

    def checkpoint(self, state: dict[str, Any], best: bool) -> None:
        """Write ``state`` to ``best.pt`` when this epoch is the best so far, then to ``last.pt``."""
        if best:
            save_checkpoint(state, self.run_dir / "best.pt")
        save_checkpoint(state, self.run_dir / "last.pt")

    def metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl``/``metrics.csv`` and the learning curve from ``history``; log its last
        record to TensorBoard."""
        record = history[-1]
        write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(item) + "\n" for item in history))
        with atomic_write(self.run_dir / "metrics.csv", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(record))
            writer.writeheader()
            writer.writerows(history)
        plot_learning_curve(history, self.run_dir / "learning_curve.png")
        board = self._tensorboard()
        if board is not None:
            for key, value in record.items():
                if key != "epoch" and value is not None:
                    board.add_scalar(key, value, record["epoch"])
            board.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json``."""
        write_json(self.run_dir / "summary.json", summary)

    def close(self) -> None:
        """Close the TensorBoard log, if one was opened, and release the directory's lock."""
        if self._writer:
            self._writer.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _tensorboard(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                self._writer = False
            else:
                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer or None
