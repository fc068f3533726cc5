"""``python -m gdram.experiments canvas``: how fast GDRAM learns where to look on a large canvas, from scratch.

Every arm trains GDRAM on the same data set (default ``cluttered-digits-128``) through
:func:`gdram.training.api.train`, with the same epochs and batch, and is read against the oracle's accuracy:

* ``default``: the robust recipe as ``gdram train`` runs it;
* ``previous``: the recipe before the salient warm-up and the sigma range in pixels (warm-up glimpses at the
  initial policy's places, sigma (0.3, 1.0) of the half side);
* ``guidance-0.01``, ``guidance-0.05``, ``guidance-0.25``: the default with location guidance on that share of
  the training boxes (LG-DRAM);
* ``curriculum``: the default trained on the small canvas (``--small-dataset``, 64x64) first, then on the
  large one from those weights without a warm-up (its curve starts after the small run's epochs and minutes);
* ``random``, ``center``, ``oracle``: glimpses that ignore the image, and every glimpse on the target's box.

A finished run is read back and a stopped one resumed, so a rerun completes the study. Per arm: test top-1
(mean ± sd over seeds), the sampled path, hit rate, glimpses on the border, and the epochs and training
minutes until the validation accuracy first reaches half and 90% of the oracle's test top-1; the validation
curves per epoch and per training minute in one plot.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gdram.experiments.summaries import by_arm, mean_cell
from gdram.training.api import resume, train

ARMS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # arm: (GDRAMConfig fields, TrainSettings fields)
    "default": ({}, {}),
    "previous": ({"warmup_glimpses": "initial", "sigma_range": (0.3, 1.0)}, {}),
    "guidance-0.01": ({}, {"location_guidance": 0.01}),
    "guidance-0.05": ({}, {"location_guidance": 0.05}),
    "guidance-0.25": ({}, {"location_guidance": 0.25}),
    "curriculum": ({"policy_warmup": 0}, {}),
    "random": ({"policy": "random"}, {}),
    "center": ({"policy": "center"}, {}),
    "oracle": ({"policy": "oracle"}, {}),
}
SHARES = (0.5, 0.9)  # of the oracle's accuracy: the epochs and minutes to reach each


def _train(
    dataset: str, run_dir: Path, fields: dict[str, Any], settings: dict[str, Any], epochs: int
) -> dict[str, Any]:
    """Train (or read back, or resume) one run; its summary with its per-epoch history."""
    if (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
    elif (run_dir / "last.pt").is_file():
        summary = resume(run_dir, epochs=epochs, quiet=True)
    else:
        summary = train(dataset, fields, settings, out=run_dir, quiet=True)
    summary["history"] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return summary


def run_arm(
    dataset: str, small_dataset: str, arm: str, seed: int, epochs: int, batch_size: int, out: Path
) -> dict[str, Any]:
    """One arm's run for ``seed``: its summary, ``history`` (metrics per epoch) and, for the curriculum, the
    small canvas's epochs and training seconds before it (``head_epochs``, ``head_seconds``)."""
    fields, extra = ARMS[arm]
    settings = {"epochs": epochs, "batch_size": batch_size, "seed": seed, **extra}
    head_epochs, head_seconds = 0, 0.0
    if arm == "curriculum":
        small = _train(small_dataset, out / "runs" / f"curriculum-small-seed{seed}", {}, settings, epochs)
        head_epochs, head_seconds = len(small["history"]), small["train_seconds"]
        settings["init_from"] = str(Path(small["run_dir"]) / "best.pt")
    summary = _train(dataset, out / "runs" / f"{arm}-seed{seed}", fields, settings, epochs)
    summary.update(arm=arm, seed=seed, dataset=dataset, head_epochs=head_epochs, head_seconds=head_seconds)
    return summary


def canvas_study(
    dataset: str,
    small_dataset: str,
    arms: Sequence[str],
    seeds: Sequence[int],
    arm_seeds: dict[str, Sequence[int]],
    epochs: int,
    batch_size: int,
    out: Path,
) -> list[dict[str, Any]]:
    """Train every (arm, seed): ``arm_seeds`` gives an arm its own seeds, the others take ``seeds``."""
    summaries = []
    for arm in arms:
        for seed in arm_seeds.get(arm, seeds):
            summary = run_arm(dataset, small_dataset, arm, seed, epochs, batch_size, out)
            summaries.append(summary)
            print(
                f"{arm}-seed{seed}: test top-1 {summary['test_top1']:.4f}, {summary['train_seconds']:.0f}s",
                file=sys.stderr,
            )
    return summaries


def curve(summary: dict[str, Any]) -> tuple[list[int], list[float], list[float]]:
    """(epochs, training minutes, validation top-1) after each epoch, the curriculum's counted from its start."""
    history = summary["history"]
    epochs = [summary["head_epochs"] + record["epoch"] for record in history]
    seconds, minutes = summary["head_seconds"], []
    for record in history:
        seconds += record["train_seconds"]
        minutes.append(seconds / 60)
    return epochs, minutes, [record["val_top1"] for record in history]


def time_to_reach(summary: dict[str, Any], accuracy: float) -> tuple[int, float] | None:
    """(epochs, training minutes) until the validation top-1 first reaches ``accuracy``; None if never."""
    for epoch, minutes, top1 in zip(*curve(summary), strict=True):
        if top1 >= accuracy:
            return epoch, minutes
    return None


def oracle_accuracy(summaries: list[dict[str, Any]]) -> float | None:
    """The oracle arm's mean test top-1, or None without it."""
    found = [item["test_top1"] for item in summaries if item["arm"] == "oracle"]
    return statistics.mean(found) if found else None


def table(summaries: list[dict[str, Any]]) -> str:
    """Markdown table: per arm, mean ± sd over seeds, and when each seed reached half and 90% of the oracle."""
    oracle = oracle_accuracy(summaries)
    reach = " | ".join(f"epochs (min) to {share:.0%} of oracle" for share in SHARES)
    lines = [
        f"| arm | seeds | test top-1 | sampled path | hit rate | on border | top-1 per seed | {reach} | training |",
        "|---|---:|---:|---:|---:|---:|---|" + "---|" * len(SHARES) + "---:|",
    ]
    for arm, group in by_arm(summaries).items():
        cells = [
            mean_cell(group, key, 100)
            for key in ("test_top1", "test_sampled_top1", "test_hit_rate", "test_border_share")
        ]
        cells.append(", ".join(f"{item['test_top1'] * 100:.1f}" for item in group))
        for share in SHARES:
            found = [None if oracle is None else time_to_reach(item, share * oracle) for item in group]
            cells.append(", ".join("-" if hit is None else f"{hit[0]} ({hit[1]:.0f})" for hit in found))
        seconds = statistics.mean(item["head_seconds"] + item["train_seconds"] for item in group)
        lines.append(f"| {arm} | {len(group)} | " + " | ".join(cells) + f" | {seconds:.0f} s |")
    return "\n".join(lines) + "\n"


def plot(summaries: list[dict[str, Any]], out: Path, title: str) -> Path:
    """Validation top-1 against epochs and against training minutes, one colour per arm, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_epoch, by_minute) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    oracle = oracle_accuracy(summaries)
    for index, (arm, group) in enumerate(by_arm(summaries).items()):
        for number, item in enumerate(group):
            epochs, minutes, top1 = curve(item)
            label = arm if number == 0 else None
            style = {"color": f"C{index}", "alpha": 0.8, "marker": ".", "label": label}
            by_epoch.plot(epochs, top1, **style)
            by_minute.plot(minutes, top1, **style)
    for axes, name in ((by_epoch, "epoch"), (by_minute, "training minutes")):
        if oracle is not None:
            for share in SHARES:
                axes.axhline(share * oracle, color="grey", linewidth=0.8, linestyle=":")
        axes.set_xlabel(name)
        axes.set_ylabel("validation top-1")
        axes.set_ylim(0, 1)
        axes.grid(alpha=0.3)
    by_epoch.legend(fontsize=8, ncol=2)
    by_epoch.set_title(title, fontsize=9)
    by_minute.set_title("dotted: half and 90% of the oracle's test top-1", fontsize=9)
    figure.tight_layout()
    path = out / "canvas.png"
    figure.savefig(path)
    plt.close(figure)
    return path
