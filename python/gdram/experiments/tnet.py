"""``python -m gdram.experiments tnet``: TNet against reading the whole image, side by side on one data set.

Six arms, every one a TNet config on the same backbone (:class:`~gdram.models.tnet_config.TNetConfig`):

* ``tnet``: learned cells (the config's defaults: 3 levels, 3x3 grids of half cells, 2 then 1 kept);
* ``tnet-gumbel``: the same, its training cells drawn without replacement (Gumbel top-k), not the top k;
* ``tnet-random``: the same, its cells drawn at random (what the learned choice adds);
* ``tnet-oracle``: the same, its cells those nearest the target box (the ceiling of the cell choice);
* ``downscaled``: one level: the backbone on the whole image downscaled to the base size;
* ``full-res``: one level at the full resolution: the backbone on the whole image as it is.

Each arm trains through :func:`gdram.training.api.train`; a finished run is read back, a stopped one resumed,
so a rerun completes the study. Per arm: test top-1 (mean and standard deviation over seeds), the hit rate of
the chosen cells (all, and each level's), FLOPs per image (``FlopCounterMode``), training images per second,
inference milliseconds per image (batch 1 and batched), measured on this machine; a Markdown table and a plot
of accuracy against FLOPs, beside every run's validation curve.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gdram.data.loading import load_data
from gdram.experiments.summaries import by_arm, mean_cell
from gdram.files import write_json
from gdram.models.tnet_config import TNetConfig
from gdram.training.api import resume, train
from gdram.training.evaluate import evaluation_totals, load_model, measure_flops, measure_latency, summarize

ARMS: dict[str, dict[str, Any]] = {
    "tnet": {},
    "tnet-gumbel": {"sampling": "gumbel"},
    "tnet-random": {"policy": "random"},
    "tnet-oracle": {"policy": "oracle"},
    "downscaled": {"levels": 1, "cells_per_level": (), "overview_size": TNetConfig.base_size},
    "full-res": {"levels": 1, "cells_per_level": (), "overview_size": None},  # None: the image's side
}


def arm_fields(arm: str, image_side: int) -> dict[str, Any]:
    """The TNetConfig fields of ``arm`` for square images of ``image_side`` pixels."""
    return {name: image_side if value is None else value for name, value in ARMS[arm].items()}


def run_arm(dataset: str, arm: str, seed: int, epochs: int, batch_size: int, out: Path, data: Any) -> dict[str, Any]:
    """Train (or read back, or resume) one arm's run on ``dataset`` (loaded: ``data``); its summary with the
    costs measured on its best model."""
    run_dir = out / "runs" / f"{arm}-seed{seed}"
    done = run_dir / "measured.json"
    if done.is_file():
        return json.loads(done.read_text())
    if (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
    elif (run_dir / "last.pt").is_file():
        summary = resume(run_dir, epochs=epochs, quiet=True)
    else:
        fields = arm_fields(arm, data.image_size[0])
        settings = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "num_workers": 0}
        summary = train(dataset, fields, settings, out=run_dir, model="tnet", quiet=True)
    model = load_model(run_dir / "best.pt").model
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary.update(
        arm=arm,
        seed=seed,
        dataset=dataset,
        flops_per_image=measure_flops(model, data.test),
        train_images_per_second=statistics.mean(record["images_per_second"] for record in history),
        **measure_latency(model, data.test, batch_size=32, repeats=5),
        test_level_hit_rates=summarize(evaluation_totals(model, data.test, batch_size=64))["level_hit_rates"],
    )
    write_json(done, summary)
    return summary


def tnet_study(
    dataset: str,
    arms: Sequence[str],
    seeds: Sequence[int],
    epochs: int,
    full_res_epochs: int,
    full_res_seeds: Sequence[int],
    batch_size: int,
    out: Path,
) -> list[dict[str, Any]]:
    """Train every (arm, seed); ``full-res`` with its own epochs and seeds (its time)."""
    data = load_data(dataset)
    summaries = []
    for arm in arms:
        full = arm == "full-res"
        for seed in full_res_seeds if full else seeds:
            summary = run_arm(dataset, arm, seed, full_res_epochs if full else epochs, batch_size, out, data)
            summaries.append(summary)
            print(
                f"{arm}-seed{seed}: test top-1 {summary['test_top1']:.4f}, {summary['flops_per_image'] / 1e6:.0f} "
                f"MFLOPs/image, {summary['train_seconds']:.0f}s",
                file=sys.stderr,
            )
    return summaries


def table(summaries: list[dict[str, Any]]) -> str:
    """Markdown table: per arm, mean ± sd over seeds of accuracy and hit rate, and the measured costs."""
    lines = [
        "| arm | seeds | test top-1 (%) | cell hit rate (%) | by level: 2 / 3 / ... (%) | MFLOPs/image | "
        "training img/s | inference ms/image (batch 1) | inference ms/image (batch 32) | epochs | training time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, group in by_arm(summaries).items():
        cells = [
            mean_cell(group, "test_top1", 100),
            mean_cell(group, "test_hit_rate", 100),
            level_cell(group),
            mean_cell(group, "flops_per_image", 1e-6, 0),
            mean_cell(group, "train_images_per_second", 1, 0),
            mean_cell(group, "latency_ms_batch1", 1, 2),
            mean_cell(group, "latency_ms_batched", 1, 2),
        ]
        epochs = group[0]["epochs"]
        seconds = statistics.mean(item["train_seconds"] for item in group)
        lines.append(f"| {arm} | {len(group)} | " + " | ".join(cells) + f" | {epochs} | {seconds:.0f} s |")
    return "\n".join(lines) + "\n"


def level_cell(group: list[dict[str, Any]]) -> str:
    """A table cell: the mean over seeds of each level's cell hit rate, in %, "61 / 57" ("-" with one level)."""
    rates = [item.get("test_level_hit_rates") or [] for item in group]
    if not rates[0] or any(None in levels for levels in rates):
        return "-"
    return " / ".join(f"{100 * statistics.mean(levels):.0f}" for levels in zip(*rates, strict=True))


def plot(summaries: list[dict[str, Any]], out: Path, title: str) -> Path:
    """Left: test top-1 against FLOPs per image (log scale), one colour per arm, every seed a dot. Right: every
    run's validation top-1 by epoch (its ``runs/<arm>-seed<seed>/metrics.jsonl``), the same colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (cost, curves) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for index, (arm, group) in enumerate(by_arm(summaries).items()):
        flops = [item["flops_per_image"] / 1e6 for item in group]
        top1 = [item["test_top1"] for item in group]
        cost.scatter(flops, top1, color=f"C{index}", label=arm, s=30)
        for item in group:
            lines = (out / "runs" / f"{arm}-seed{item['seed']}" / "metrics.jsonl").read_text().splitlines()
            history = [json.loads(line) for line in lines]
            epochs = [record["epoch"] for record in history]
            curves.plot(epochs, [record["val_top1"] for record in history], color=f"C{index}", marker=".", lw=1)
    cost.set_xscale("log")
    cost.set_xlabel("MFLOPs per image (inference)")
    cost.set_ylabel("test top-1")
    cost.legend(fontsize=8)
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation top-1")
    for axes in (cost, curves):
        axes.set_ylim(0, 1)
        axes.grid(alpha=0.3)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path = out / "tnet.png"
    figure.savefig(path)
    plt.close(figure)
    return path
