"""Rerunnable experiments: ``python -m gdram.experiments attention``, ``... canvas``, ``... corner``, ``... alignment``,
``... tnet``.

``attention`` asks whether learned glimpses beat glimpses that ignore the image: it trains GDRAM
with the learned policy, the random policy and the centre policy (and, optionally, learned with
location guidance on a share of the training boxes) for several seeds at the same budget as
``gdram train``, evaluates each best checkpoint on the test split, and writes into ``--out``:

* ``runs/<name>/``: every run directory (skipped when its ``summary.json`` exists, so an
  interrupted experiment continues where it stopped);
* ``results.json``: every run's summary; ``results.md``: the table (mean and spread over seeds);
* ``attention.png``: test top-1 and glimpse hit rate per policy, and the validation curves.

``alignment`` asks a trained model's reward where the target is: the cosine between the REINFORCE
estimate of each move and the direction to the target box (:mod:`gdram.analysis.alignment`), for several
exploration sigmas and rewards, in seconds.

``corner`` asks the attention question on a tiny task that only a glimpse at one place can solve
(:func:`corner_task`, seconds per run): each recipe and policy, one table.

``canvas`` measures how fast attention learns on a large canvas from scratch, recipe against recipe, guidance,
curriculum and the oracle (:mod:`gdram.experiments.canvas`).

``tnet`` sets TNet against the same backbone reading the whole image (:mod:`gdram.experiments.tnet`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gdram.analysis.alignment import reinforce_alignment
from gdram.cli.options import (
    HelpFormatter,
    OneLineParser,
    error_line,
    non_negative_int,
    positive_float,
    positive_int,
    unit_fraction,
)
from gdram.data.datasets import DataSplits, TensorImages, batches
from gdram.data.loading import DATASETS, load_data
from gdram.experiments import canvas
from gdram.experiments.tnet import ARMS, tnet_study
from gdram.experiments.tnet import plot as tnet_plot
from gdram.experiments.tnet import table as tnet_table
from gdram.files import write_json, write_text
from gdram.models.config import MOVES, REWARDS, GDRAMConfig
from gdram.models.gdram import check_model_size, create_model
from gdram.training.api import EMBEDDED_BATCH_SIZE, EMBEDDED_EPOCHS, USER_ERRORS
from gdram.training.checkpoint import CheckpointError, load_checkpoint
from gdram.training.trainer import Trainer, TrainSettings

CORNERS = ((3, 3), (23, 3), (3, 23), (23, 23))  # top-left pixel of each 6x6 patch on a 32x32 image
CORNER_RUNS = (
    ("robust", "learned", 0.0),
    ("paper", "learned", 0.0),
    ("robust", "center", 0.0),
    ("robust", "random", 0.0),
    ("robust", "learned", 0.25),
    ("robust", "oracle", 0.0),
)

METRICS = (
    ("test_top1", "test top-1"),
    ("test_sampled_top1", "sampled path"),
    ("test_hit_rate", "hit rate"),
    ("test_box_distance_px", "px to target"),
    ("test_border_share", "on border"),
)


def corner_task(count: int, seed: int) -> TensorImages:
    """A tiny task where only one glimpse place tells the class: (count, 1, 32, 32) images, 2 classes.

    The class is the orientation of the 1-pixel bars in the top-left 6x6 patch; the three other
    corners hold bars of random orientation. Bars of 1 pixel vanish at every coarser retina scale
    (2x, 4x), so only the finest scale on the top-left patch tells the class. Every image's box is
    that patch (x 3-9, y 3-9).
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (count,), generator=generator)
    vertical = torch.randint(0, 2, (count, 4), generator=generator).bool()
    vertical[:, 0] = labels.bool()
    images = torch.zeros(count, 1, 32, 32)
    for corner, (x, y) in enumerate(CORNERS):
        patch = images[:, 0, y : y + 6, x : x + 6]
        patch[vertical[:, corner], :, ::2] = 1.0
        patch[~vertical[:, corner], ::2, :] = 1.0
    boxes = torch.tensor([[3.0, 3.0, 9.0, 9.0]]).expand(count, 4).clone()
    return TensorImages((images * 255).to(torch.uint8), labels, boxes=boxes)


def train_on_corner_task(
    out: Path, recipe: str, policy: str, guidance: float = 0.0, epochs: int = 6, seed: int = 0
) -> dict[str, Any]:
    """Train a small GDRAM (3 glimpses of 3 scales of 4x4) on :func:`corner_task`; returns the summary."""
    data = DataSplits("corner-task", corner_task(2048, 1), corner_task(256, 2), corner_task(256, 3), 2, 1, (32, 32))
    config = GDRAMConfig(
        num_classes=2,
        in_channels=1,
        image_size=32,
        glimpse_size=4,
        num_scales=3,
        num_glimpses=3,
        hidden_size=32,
        glimpse_channels=(8, 16),
        context_channels=8,
        mlp_hidden_size=32,
        recipe=recipe,
        policy=policy,
    )
    settings = TrainSettings(
        epochs=epochs, batch_size=32, seed=seed, device="cpu", num_workers=0, location_guidance=guidance
    )
    run_dir = out / f"{recipe}-{policy}{f'-lg{guidance:g}' if guidance else ''}-seed{seed}"
    return Trainer(config, data, settings, run_dir, {"source": "corner-task"}, quiet=True).fit()


def corner(out: Path, seeds: Sequence[int]) -> str:
    """Every :data:`CORNER_RUNS` entry for each seed on the corner task; returns the markdown table."""
    lines = [
        "| recipe | policy | location guidance | test top-1 per seed | hit rate per seed |",
        "|---|---|---:|---|---|",
    ]
    for recipe, policy, guidance in CORNER_RUNS:
        runs = [train_on_corner_task(out, recipe, policy, guidance, seed=seed) for seed in seeds]
        top1 = ", ".join(f"{run['test_top1'] * 100:.1f}" for run in runs)
        hits = ", ".join(_format(run["test_hit_rate"], 2) for run in runs)
        lines.append(f"| {recipe} | {policy} | {guidance:g} | {top1} | {hits} |")
    return "\n".join(lines) + "\n"


def run_name(policy: str, guidance: float, seed: int) -> str:
    """Directory name of one run: ``learned-seed0``, ``learned-lg0.05-seed1``, ``random-seed2``..."""
    return f"{policy}{f'-lg{guidance:g}' if guidance else ''}-seed{seed}"


def attention(
    dataset: str,
    seeds: Sequence[int],
    policies: Sequence[str],
    guidance: Sequence[float],
    guidance_seeds: Sequence[int],
    out: Path,
    epochs: int,
    batch_size: int,
    recipe: str,
    ingredients: dict[str, Any] | None = None,
    init_from: Path | None = None,
) -> list[dict[str, Any]]:
    """Train every (policy, seed) and (learned with guidance, seed) run; returns their summaries.

    ``ingredients``: :class:`GDRAMConfig` fields that override the recipe's (e.g. ``policy_warmup``).
    ``init_from``: an earlier experiment's folder; each run starts from the weights of its namesake
    there (``runs/<name>/best.pt``, see :attr:`TrainSettings.init_from`), e.g. small canvases first.
    """
    data = load_data(dataset)
    plan = [(policy, 0.0, seed) for policy in policies for seed in seeds]
    plan += [("learned", fraction, seed) for fraction in guidance for seed in guidance_seeds]
    summaries = []
    for policy, fraction, seed in plan:
        run_dir = out / "runs" / run_name(policy, fraction, seed)
        done = run_dir / "summary.json"
        if done.is_file():
            summary = json.loads(done.read_text())
        else:
            started = time.perf_counter()
            config = GDRAMConfig(
                num_classes=data.num_classes,
                in_channels=data.in_channels,
                image_size=data.image_size,
                recipe=recipe,
                policy=policy,
                **(ingredients or {}),
            )
            name = run_name(policy, fraction, seed)
            start = None if init_from is None else str(init_from / "runs" / name / "best.pt")
            settings = TrainSettings(
                epochs=epochs, batch_size=batch_size, seed=seed, location_guidance=fraction, init_from=start
            )
            if (run_dir / "last.pt").is_file():
                trainer = Trainer.resume(run_dir, data, quiet=True)
            else:
                trainer = Trainer(config, data, settings, run_dir, {"source": dataset}, quiet=True)
            summary = trainer.fit()
            summary["wall_seconds"] = time.perf_counter() - started
            write_json(done, summary)  # atomically: a half-written summary would stop the next rerun
        summary.update(policy=policy, guidance=fraction, seed=seed, run=run_name(policy, fraction, seed))
        summaries.append(summary)
        print(
            f"{summary['run']}: test top-1 {summary['test_top1']:.4f}, hit rate "
            f"{_format(summary.get('test_hit_rate'))}, {summary['train_seconds']:.0f}s",
            file=sys.stderr,
        )
    return summaries


def _format(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _groups(summaries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for summary in summaries:
        label = summary["policy"] + (f" + guidance {summary['guidance']:g}" if summary["guidance"] else "")
        groups.setdefault(label, []).append(summary)
    return groups


def table(summaries: list[dict[str, Any]]) -> str:
    """Markdown table: per policy, mean ± standard deviation over seeds (and each seed's top-1)."""
    lines = [
        "| policy | seeds | " + " | ".join(title for _, title in METRICS) + " | top-1 per seed | training |",
        "|---|---:|" + "---:|" * len(METRICS) + "---|---:|",
    ]
    for label, group in _groups(summaries).items():
        cells = []
        for key, _ in METRICS:
            values = [item[key] for item in group if item.get(key) is not None]
            if not values:
                cells.append("-")
                continue
            scale, digits = (1, 1) if key.endswith("_px") else (100, 1)
            spread = f" ± {statistics.stdev(values) * scale:.{digits}f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values) * scale:.{digits}f}{spread}")
        per_seed = ", ".join(f"{item['test_top1'] * 100:.1f}" for item in group)
        seconds = statistics.mean(item["train_seconds"] for item in group)
        lines.append(f"| {label} | {len(group)} | " + " | ".join(cells) + f" | {per_seed} | {seconds:.0f} s |")
    return "\n".join(lines) + "\n"


def plot(summaries: list[dict[str, Any]], out: Path, title: str) -> Path:
    """Bars of test top-1 and hit rate per policy (mean, seeds as dots) and the validation curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(summaries)
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for offset, (key, name) in enumerate((("test_top1", "test top-1"), ("test_hit_rate", "glimpse hit rate"))):
        for index, group in enumerate(groups.values()):
            values = [item[key] for item in group if item.get(key) is not None]
            if not values:
                continue
            x = index + (offset - 0.5) * 0.38
            bars.bar(x, statistics.mean(values), width=0.36, color=f"C{offset}", label=name if index == 0 else None)
            bars.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    bars.set_xticks(range(len(groups)), list(groups), rotation=20, fontsize=8)
    bars.set_ylim(0, 1)
    bars.legend(fontsize=8)
    bars.set_title(title, fontsize=9)
    for index, (label, group) in enumerate(groups.items()):
        for number, item in enumerate(group):
            metrics = out / "runs" / item["run"] / "metrics.jsonl"
            history = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
            curves.plot(
                [record["epoch"] for record in history],
                [record["val_top1"] for record in history],
                color=f"C{index}",
                alpha=0.8,
                label=label if number == 0 else None,
            )
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation top-1")
    curves.set_ylim(0, 1)
    curves.legend(fontsize=8)
    curves.grid(alpha=0.3)
    figure.tight_layout()
    path = out / "attention.png"
    figure.savefig(path)
    plt.close(figure)
    return path


def alignment(
    checkpoint: Path,
    dataset: str,
    sigmas: Sequence[float | None],
    rewards: Sequence[str],
    images: int,
    episodes: int,
    overrides: dict[str, Any],
) -> str:
    """:func:`gdram.analysis.alignment.reinforce_alignment` of a trained run's model on ``images`` validation
    images, for each exploration sigma (None: the model's own) and reward; returns the markdown table.

    A checkpoint trained with a fixed policy (centre, random) gets a fresh learned emission network
    (its mean at the centre with ``zero_init_mu``), so that the reward its classifier gives can be
    asked where it points. ``overrides``: :class:`GDRAMConfig` fields to change (e.g. ``moves``).
    """
    state = load_checkpoint(checkpoint)
    try:
        config = dataclasses.replace(
            GDRAMConfig.from_dict(state["config"], state.get("train")), policy="learned", **overrides
        )
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{checkpoint}: a gdram checkpoint whose configuration is refused: {error}") from None
    if config.variant == "cnn":
        raise ValueError(f"{checkpoint} is the CNN baseline: it makes no moves to align")
    check_model_size(config, str(checkpoint))
    data = load_data(dataset)
    batch, labels, boxes = next(iter(batches(data.val, images, boxes=True)))
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(
            f"{data.name} has no target box for every validation image: alignment measures the direction to "
            "the target, pass a --dataset with boxes (an embedded one)"
        )
    model = create_model(config)
    fresh = sorted({key.split(".")[0] for key in model.load_state_dict(state["model"], strict=False).missing_keys})
    lines = [
        f"{checkpoint}: {len(labels)} validation images, {episodes} episodes each"
        + (f"; fresh (untrained) modules: {', '.join(fresh)}" if fresh else ""),
        "",
        "| sigma | reward | alignment | per move t = 0 .. T-1 | single episode |",
        "|---:|---|---:|---|---:|",
    ]
    for sigma in sigmas:
        if sigma is not None:
            model.emission.fix_sigma(sigma)
        for reward in rewards:
            torch.manual_seed(0)
            found = reinforce_alignment(model, batch, labels, boxes, episodes, reward)
            moves = " ".join(f"{value:.2f}" for value in found.per_move.tolist())
            lines.append(
                f"| {'model' if sigma is None else f'{sigma:g}'} | {reward} | {found.per_move.mean():.3f} | {moves} "
                f"| {found.single_episode.mean():.3f} |"
            )
    return "\n".join(lines) + "\n"


def _ingredient(text: str) -> tuple[str, Any]:
    name, sign, value = text.partition("=")
    if not sign or not name:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gdram.experiments``; returns the exit code (2: a bad argument, checked
    before any run starts; 1: bad input or a failed run, one line; 130: interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_arguments(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        print(f"{parser.prog}: error: {error_line(error)}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The experiments' command line: checked option types, one-line usage errors (exit 2)."""
    parser = OneLineParser(
        prog="python -m gdram.experiments",
        formatter_class=HelpFormatter,
        description="Rerunnable experiments of the gdram package.",
    )
    commands = parser.add_subparsers(dest="experiment", required=True)
    run = commands.add_parser(
        "attention",
        formatter_class=HelpFormatter,
        help="learned vs random vs centre glimpses (and location guidance), several seeds",
    )
    run.add_argument("--dataset", default="cluttered-digits", help="a named data set (an embedded one: no network)")
    run.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2], help="seeds of every policy")
    run.add_argument(
        "--policies",
        nargs="+",
        default=["learned", "random", "center"],
        choices=["learned", "random", "center", "oracle"],
        help="location policies to compare",
    )
    run.add_argument(
        "--guidance",
        type=unit_fraction,
        nargs="*",
        default=[],
        help="also train learned with these shares of training boxes (LG-DRAM), e.g. 0.01 0.05 1",
    )
    run.add_argument("--guidance-seeds", type=non_negative_int, nargs="+", default=[0], help="seeds of the guided runs")
    run.add_argument("--epochs", type=positive_int, default=EMBEDDED_EPOCHS, help="epochs of every run")
    run.add_argument("--batch-size", type=positive_int, default=EMBEDDED_BATCH_SIZE, help="images per step")
    run.add_argument("--recipe", default="robust", choices=["robust", "paper"], help="training recipe")
    run.add_argument(
        "--set",
        type=_ingredient,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a recipe ingredient of every run, e.g. policy_warmup=0 (VALUE read as JSON when it parses)",
    )
    run.add_argument(
        "--init-from",
        type=Path,
        metavar="FOLDER",
        help="an earlier experiment's --out: each run starts from its namesake's best.pt (e.g. smaller canvases first)",
    )
    run.add_argument("--out", type=Path, help="output folder (default: experiments/attention-<dataset>)")
    large = commands.add_parser(
        "canvas",
        formatter_class=HelpFormatter,
        help="from scratch on a large canvas: recipes, guidance, curriculum, random, centre, oracle; learning curves",
    )
    large.add_argument("--dataset", default="cluttered-digits-128", help="the large canvas (a named data set)")
    large.add_argument(
        "--small-dataset", default="cluttered-digits", help="the curriculum's first canvas (the same digits, smaller)"
    )
    large.add_argument(
        "--arms", nargs="+", default=list(canvas.ARMS), choices=list(canvas.ARMS), help="what to compare"
    )
    large.add_argument(
        "--main-arms",
        nargs="*",
        default=["default", "guidance-0.05"],
        choices=list(canvas.ARMS),
        help="the arms the targets are read on, trained with --main-seeds",
    )
    large.add_argument("--main-seeds", type=non_negative_int, nargs="+", default=[0, 1, 2], help="their seeds")
    large.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0], help="seeds of the other arms")
    large.add_argument("--epochs", type=positive_int, default=EMBEDDED_EPOCHS, help="epochs of every run")
    large.add_argument("--batch-size", type=positive_int, default=EMBEDDED_BATCH_SIZE, help="images per step")
    large.add_argument("--out", type=Path, help="output folder (default: experiments/canvas-<dataset>)")
    pyramid = commands.add_parser(
        "tnet",
        formatter_class=HelpFormatter,
        help="TNet (learned and random cells) against the same backbone on the whole image, downscaled and full",
    )
    pyramid.add_argument("--dataset", default="cluttered-digits-512", help="a named data set of square images")
    pyramid.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="what to compare")
    pyramid.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2], help="seeds of every arm")
    pyramid.add_argument("--epochs", type=positive_int, default=EMBEDDED_EPOCHS, help="epochs of every arm")
    pyramid.add_argument(
        "--full-res-epochs", type=positive_int, default=EMBEDDED_EPOCHS, help="epochs of the full-resolution arm"
    )
    pyramid.add_argument(
        "--full-res-seeds", type=non_negative_int, nargs="+", default=[0], help="seeds of the full-resolution arm"
    )
    pyramid.add_argument("--batch-size", type=positive_int, default=EMBEDDED_BATCH_SIZE, help="images per step")
    pyramid.add_argument("--out", type=Path, help="output folder (default: experiments/tnet-<dataset>)")
    small = commands.add_parser(
        "corner",
        formatter_class=HelpFormatter,
        help="recipes and policies on a tiny task only one glimpse place solves (minutes)",
    )
    small.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2], help="seeds of every run")
    small.add_argument("--out", type=Path, default=Path("experiments") / "corner", help="output folder")
    aim = commands.add_parser(
        "alignment",
        formatter_class=HelpFormatter,
        help="does the REINFORCE estimate of a trained model point at the target? (seconds)",
    )
    aim.add_argument("checkpoint", type=Path, help="a run's best.pt or last.pt")
    aim.add_argument("--dataset", default="cluttered-digits", help="the data set it was trained on (with boxes)")
    aim.add_argument(
        "--sigmas",
        type=positive_float,
        nargs="+",
        help="exploration sigmas to try instead of the model's own learned one",
    )
    aim.add_argument("--rewards", nargs="+", default=["gain", "probs"], choices=REWARDS, help="rewards to try")
    aim.add_argument("--images", type=positive_int, default=48, help="validation images")
    aim.add_argument("--episodes", type=positive_int, default=64, help="sampled episodes per image")
    aim.add_argument("--moves", choices=MOVES, help="override the model's moves")
    aim.add_argument("--bounded-mean", action=argparse.BooleanOptionalAction, help="override the model's bounded_mean")
    return parser


def _check_arguments(args: argparse.Namespace) -> None:
    """Check what argparse cannot before any run starts (``ValueError`` naming the argument)."""
    out = getattr(args, "out", None)
    if out is not None:
        existing = next(place for place in (out, *out.parents) if place.exists())
        if not existing.is_dir():
            raise ValueError(f"argument --out: {existing} exists and is not a directory")
    for option in ("dataset", "small_dataset"):
        dataset = getattr(args, option, None)
        if dataset is not None and dataset not in DATASETS and not Path(dataset).expanduser().exists():
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"argument {flag}: {dataset} is none of {', '.join(DATASETS)}, nor a file or folder")
    if args.experiment == "alignment" and not args.checkpoint.is_file():
        raise ValueError(f"argument checkpoint: {args.checkpoint}: no such checkpoint file")
    if args.experiment == "tnet":
        data = load_data(args.dataset)
        if data.image_size[0] != data.image_size[1]:
            raise ValueError(f"argument --dataset: TNet reads square images; {args.dataset} has {data.image_size}")
        return
    if args.experiment != "attention":
        return
    ingredients = dict(args.set)
    try:
        GDRAMConfig(num_classes=2, in_channels=1, image_size=4096, recipe=args.recipe, **ingredients)
    except (TypeError, ValueError) as error:
        raise ValueError(f"argument --set: {error}") from None
    if args.init_from is not None:
        plan = [(policy, 0.0, seed) for policy in args.policies for seed in args.seeds]
        plan += [("learned", fraction, seed) for fraction in args.guidance for seed in args.guidance_seeds]
        absent = [
            str(path)
            for path in (args.init_from / "runs" / run_name(*run) / "best.pt" for run in plan)
            if not path.is_file()
        ]
        if absent:
            raise ValueError(
                f"argument --init-from: no {absent[0]}" + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else "")
            )


def _run(args: argparse.Namespace) -> int:
    """Run the experiment ``args`` asks for; returns the exit code."""
    if args.experiment == "alignment":
        overrides = {name: getattr(args, name) for name in ("moves", "bounded_mean") if getattr(args, name) is not None}
        markdown = alignment(
            args.checkpoint, args.dataset, args.sigmas or [None], args.rewards, args.images, args.episodes, overrides
        )
        print(markdown)
        return 0
    if args.experiment == "tnet":
        return _run_tnet(args)
    if args.experiment == "canvas":
        return _run_canvas(args)
    if args.experiment == "corner":
        markdown = corner(args.out, args.seeds)
        args.out.mkdir(parents=True, exist_ok=True)
        write_text(args.out / "results.md", markdown)
        print(markdown)
        return 0
    out = args.out or Path("experiments") / f"attention-{args.dataset}"
    out.mkdir(parents=True, exist_ok=True)
    summaries = attention(
        args.dataset,
        args.seeds,
        args.policies,
        args.guidance,
        args.guidance_seeds,
        out,
        args.epochs,
        args.batch_size,
        args.recipe,
        dict(args.set),
        args.init_from,
    )
    write_json(out / "results.json", summaries)
    changed = "".join(f", {name}={value}" for name, value in args.set)
    changed += f", starting from {args.init_from}" if args.init_from else ""
    title = f"{args.dataset}, {args.epochs} epochs, batch {args.batch_size}, {args.recipe} recipe{changed}"
    markdown = f"{title}; test split, mean ± sd over seeds (%).\n\n" + table(summaries)
    write_text(out / "results.md", markdown)
    plot(summaries, out, title)
    print(markdown)
    return 0


def _run_tnet(args: argparse.Namespace) -> int:
    out = args.out or Path("experiments") / f"tnet-{args.dataset}"
    out.mkdir(parents=True, exist_ok=True)
    summaries = tnet_study(
        args.dataset,
        args.arms,
        args.seeds,
        args.epochs,
        args.full_res_epochs,
        args.full_res_seeds,
        args.batch_size,
        out,
    )
    write_json(out / "results.json", summaries)
    full_res = f" (full-res {args.full_res_epochs})" if "full-res" in args.arms else ""
    title = f"{args.dataset}, {args.epochs} epochs{full_res}, batch {args.batch_size}"
    markdown = f"{title}; test split, mean ± sd over seeds, costs measured on this machine.\n\n" + tnet_table(summaries)
    write_text(out / "results.md", markdown)
    tnet_plot(summaries, out, title)
    print(markdown)
    return 0


def _run_canvas(args: argparse.Namespace) -> int:
    out = args.out or Path("experiments") / f"canvas-{args.dataset}"
    out.mkdir(parents=True, exist_ok=True)
    summaries = canvas.canvas_study(
        args.dataset,
        args.small_dataset,
        args.arms,
        args.seeds,
        dict.fromkeys(args.main_arms, args.main_seeds),
        args.epochs,
        args.batch_size,
        out,
    )
    write_json(out / "results.json", summaries)
    title = f"{args.dataset} from scratch, {args.epochs} epochs, batch {args.batch_size}"
    markdown = (
        f"{title}; test split, mean ± sd over seeds (%); epochs and training minutes on the validation split.\n\n"
        + canvas.table(summaries)
    )
    write_text(out / "results.md", markdown)
    canvas.plot(summaries, out, title)
    print(markdown)
    return 0
