"""Learning curves: accuracy and where the glimpses go, per epoch, as a PNG in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_learning_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Draw validation top-1 (mean path and sampled path), training top-1 and glimpse hit rate per epoch.

    ``history``: the trainer's per-epoch records (``metrics.jsonl`` rows); a metric that is None
    (no boxes, say) is left out. Writes ``path`` (PNG) and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [record["epoch"] for record in history]
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    series = (
        ("val_top1", "val top-1 (mean path)", "-"),
        ("val_sampled_top1", "val top-1 (sampled path)", "--"),
        ("train_top1", "train top-1", ":"),
        ("val_hit_rate", "val glimpse hit rate", "-."),
    )
    for key, label, style in series:
        points = [(epoch, record.get(key)) for epoch, record in zip(epochs, history, strict=True)]
        points = [(epoch, value) for epoch, value in points if value is not None]
        if points:
            axis.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=label)
    axis.set_xlabel("epoch")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
