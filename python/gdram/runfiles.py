"""The run directory's files, written by one writer (rank 0 of a run): every file atomically.

``config.json`` (the model, the training settings and the data), ``last.pt`` and ``best.pt``
(:mod:`gdram.checkpoint`), ``metrics.jsonl`` and ``metrics.csv`` (one row per epoch, rewritten
from the whole history so a resumed run has no stale rows), ``learning_curve.png``,
``summary.json``, and ``tensorboard/`` when TensorBoard is installed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from gdram.checkpoint import save_checkpoint
from gdram.files import atomic_write, write_json, write_text
from gdram.plots import plot_learning_curve


class RunFiles:
    """Writes the files of the run in ``run_dir``; :meth:`close` ends the TensorBoard log."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._writer = None

    def start(self, description: dict[str, Any]) -> None:
        """Create the directory and write ``config.json`` (``{"model": ..., "train": ..., "data": ...}``)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / "config.json", description)

    def checkpoint(self, state: dict[str, Any], best: bool) -> None:
        """Write ``state`` to ``last.pt``, and to ``best.pt`` when this epoch is the best so far."""
        save_checkpoint(state, self.run_dir / "last.pt")
        if best:
            save_checkpoint(state, self.run_dir / "best.pt")

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
        """Close the TensorBoard log, if one was opened."""
        if self._writer:
            self._writer.close()

    def _tensorboard(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                self._writer = False
            else:
                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer or None
