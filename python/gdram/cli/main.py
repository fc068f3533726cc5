"""The ``gdram`` command line: ``train``, ``eval`` and ``visualize`` (also ``python -m gdram``).

Exit codes: 0 success, 2 usage error, 1 bad input or a failed run (one line on stderr, no
traceback; an unexpected internal error also says where its full traceback was written, or shows
it with ``--debug``), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from gdram.cli.options import (
    HelpFormatter,
    OneLineParser,
    device_name,
    error_line,
    image_size,
    non_negative_float,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_int,
    unit_fraction,
    write_traceback,
)
from gdram.data.classes import check_classes, check_model_classes
from gdram.data.cluttered import EMBEDDED_SPECS, check_cache
from gdram.data.datasets import DataError, DataSplits, batches
from gdram.data.imagefiles import MAX_IMAGE_SIDE
from gdram.data.loading import DATASETS, load_data
from gdram.data.provenance import locate, same_data, verify
from gdram.files import remove_stale_temporaries
from gdram.models.config import MOVES, POLICIES, POLICY_TRAINS, RECIPES, RETINA_MODES, REWARDS, VARIANTS, GDRAMConfig
from gdram.models.gdram import check_model_size
from gdram.training.checkpoint import CheckpointError, load_checkpoint, load_state_file
from gdram.training.distributed import Distributed, init_distributed, resolve_device
from gdram.training.evaluate import evaluation_totals, measure_latency, model_from_state, summarize
from gdram.training.runfiles import claim_new_run_dir, foreign_entries, lock_run_dir
from gdram.training.trainer import Trainer, TrainingDiverged, TrainSettings, check_resumable

EMBEDDED_SETS = ("cluttered-digits", "cluttered-digits-128")
EMBEDDED_EPOCHS = 6  # the embedded sets' few-minute CPU budget (see README, "Does it learn?")
EMBEDDED_BATCH_SIZE = 32  # more steps in that budget than the paper's 128
VAL_FRACTION = 0.1
# Defaults of the training flags, applied after parsing so that --resume can tell a flag given from one left out.
TRAIN_DEFAULTS: dict[str, Any] = {
    "variant": "gdram",
    "policy": "learned",
    "recipe": "robust",
    "lr": 1e-3,
    "lr_patience": 5,
    "weight_decay": 0.0,
    "seed": 0,
    "device": "auto",
    "workers": 2,
    "location_guidance": 0.0,
    "guidance_weight": 10.0,
}
# GDRAMConfig's recipe ingredients settable from the command line (None: the recipe's value).
INGREDIENT_FLAGS = (
    "sigma_range",
    "weight_trains_sigma",
    "unclipped_log_prob",
    "policy_trains",
    "zero_init_mu",
    "baseline_init",
    "context_mode",
    "reward",
    "normalize_advantage",
    "policy_lr_scale",
    "location_gradient",
    "baseline_before_move",
    "emission_batch_norm",
    "border_penalty",
    "moves",
    "bounded_mean",
    "straight_through_mean",
    "policy_warmup",
)
# GDRAMConfig fields the flags set, and those flags (a refused value is a usage error naming its flag).
FIELD_FLAGS = {
    "num_glimpses": "--glimpses",
    "glimpse_size": "--glimpse-size",
    "num_scales": "--scales",
    "retina_mode": "--retina-mode",
    "hidden_size": "--hidden-size",
    **{name: "--" + name.replace("_", "-") for name in INGREDIENT_FLAGS},
}
ATTENTION_FLAGS = {
    "glimpses": "--glimpses",
    "glimpse_size": "--glimpse-size",
    "scales": "--scales",
    "retina_mode": "--retina-mode",
}
USER_ERRORS = (DataError, CheckpointError, TrainingDiverged, ValueError, OSError)


def _version() -> str:
    try:
        return metadata.version("gdram-ext")
    except metadata.PackageNotFoundError:
        return "unknown"


def _add_data_options(parser: argparse.ArgumentParser, default_help: str) -> None:
    group = parser.add_argument_group("data")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=DATASETS, help=f"a named data set ({default_help})")
    source.add_argument(
        "--data",
        metavar="PATH",
        help="a .npz file (x_train, y_train, x_test, y_test[, x_val, y_val]) or an ImageFolder directory",
    )
    group.add_argument(
        "--data-root", metavar="DIR", help="where torchvision data sets live (default: ~/.cache/gdram/data)"
    )
    group.add_argument("--download", action="store_true", help="download a missing torchvision data set")
    group.add_argument(
        "--image-size",
        type=image_size,
        metavar="N|HxW",
        help="resize the images to this size (default: the data's own size)",
    )
    group.add_argument(
        "--val-fraction",
        type=open_fraction,
        metavar="F",
        help=f"training share held out for validation when the data has no validation split (default: {VAL_FRACTION})",
    )


def _add_checkpoint_options(parser: argparse.ArgumentParser, splits: tuple[str, ...], split_help: str) -> None:
    """What ``eval`` and ``visualize`` read: the checkpoint, its data (default: the checkpoint's own) and a split."""
    parser.add_argument("checkpoint", help="best.pt/last.pt of a run, or the authors' published .pth")
    _add_data_options(parser, "default: the checkpoint's own data set")
    parser.add_argument("--split", choices=splits, default="test", help=split_help)


def _add_recipe_options(parser: argparse.ArgumentParser) -> None:
    recipe = parser.add_argument_group("recipe ingredients (default: the recipe's value; see GDRAMConfig)")
    recipe.add_argument(
        "--sigma-range",
        type=positive_float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="range of the learned sigma of a move (paper: 0.61 1.65, robust: 0.3 1.0)",
    )
    recipe.add_argument(
        "--weight-trains-sigma",
        action=argparse.BooleanOptionalAction,
        help="the classification loss trains sigma through the uncertainty weight (paper)",
    )
    recipe.add_argument(
        "--unclipped-log-prob",
        action=argparse.BooleanOptionalAction,
        help="REINFORCE on the log-density of the sample before its clip (robust)",
    )
    recipe.add_argument(
        "--policy-trains",
        choices=POLICY_TRAINS,
        help="what the policy gradient trains: the emission head (paper), or the where pathway: "
        "emission, upper core and context network (robust)",
    )
    recipe.add_argument(
        "--zero-init-mu",
        action=argparse.BooleanOptionalAction,
        help="start the mu head at zero: first glimpse at the centre, no move (robust)",
    )
    recipe.add_argument(
        "--baseline-init",
        type=open_fraction,
        metavar="B",
        help="the baseline's initial output (robust: 1 / classes, the chance reward)",
    )
    recipe.add_argument(
        "--baseline-before-move",
        action=argparse.BooleanOptionalAction,
        help="a move's baseline reads the state before the move, not the glimpse it placed (robust)",
    )
    recipe.add_argument(
        "--context-mode",
        choices=("nearest", "bilinear", "area"),
        help="the context network's downsampling (paper: nearest, robust: area)",
    )
    recipe.add_argument(
        "--reward",
        choices=REWARDS,
        help="final: 1 when the final prediction is right (paper); "
        "steps: share of right step predictions from the move on; "
        "probs: mean probability of the label from the move on; "
        "gain: the rise of the label's probability that the move's own glimpse brings (robust)",
    )
    recipe.add_argument(
        "--moves",
        choices=MOVES,
        help="relative: the next glimpse is the last one plus the move (paper, eq. 9); "
        "absolute: the action is the next glimpse's place (robust, as RAM)",
    )
    recipe.add_argument(
        "--bounded-mean",
        action=argparse.BooleanOptionalAction,
        help="with absolute moves, the policy's mean ranges over the allowed glimpse centres only (robust)",
    )
    recipe.add_argument(
        "--straight-through-mean",
        action=argparse.BooleanOptionalAction,
        help="the policy gradient passes the mean's tanh as the identity, "
        "so a mean saturated at the border comes back (robust)",
    )
    recipe.add_argument(
        "--policy-warmup",
        type=non_negative_int,
        metavar="EPOCHS",
        help="first epochs without the policy gradient: the classifier learns from the initial policy's glimpses",
    )
    recipe.add_argument(
        "--normalize-advantage",
        action=argparse.BooleanOptionalAction,
        help="divide the advantage by its standard deviation over the batch (robust)",
    )
    recipe.add_argument(
        "--policy-lr-scale",
        type=positive_float,
        metavar="S",
        help="learning rate of what only the policy gradient trains, relative to --lr",
    )
    recipe.add_argument(
        "--emission-batch-norm",
        action=argparse.BooleanOptionalAction,
        help="BatchNorm in the emission network's hidden layer (paper)",
    )
    recipe.add_argument(
        "--border-penalty",
        type=non_negative_float,
        metavar="W",
        help="weight of the pull that brings a mean glimpse which left the image back to its border",
    )
    recipe.add_argument(
        "--location-gradient",
        action=argparse.BooleanOptionalAction,
        help="also train the policy with the classification loss's gradient through the retina",
    )
    guidance = parser.add_argument_group("location guidance (LG-DRAM)")
    guidance.add_argument(
        "--location-guidance",
        type=unit_fraction,
        metavar="FRACTION",
        help="share of the training images whose target box also trains the policy; needs boxes "
        f"(default: {TRAIN_DEFAULTS['location_guidance']}, pure REINFORCE)",
    )
    guidance.add_argument(
        "--guidance-weight",
        type=non_negative_float,
        metavar="W",
        help=f"weight of the guidance loss (default: {TRAIN_DEFAULTS['guidance_weight']})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="gdram",
        formatter_class=HelpFormatter,
        description="Train, evaluate and look at glimpse-attention classifiers "
        "(Gaussian Deep Recurrent Attention Models).",
    )
    parser.add_argument("--version", action="version", version=f"gdram {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,visualize}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of any error")

    train = commands.add_parser(
        "train",
        help="train a model; with no options, GDRAM on the embedded data set",
        formatter_class=HelpFormatter,
        parents=[common],
        description="Train, validate every epoch, keep the best checkpoint by validation "
        "accuracy, evaluate it on the test split and print a one-line summary.",
    )
    _add_data_options(train, "default: cluttered-digits, embedded, no network needed")
    model = train.add_argument_group("model")
    model.add_argument(
        "--variant",
        choices=VARIANTS,
        help=f"attention variant or the CNN baseline (default: {TRAIN_DEFAULTS['variant']})",
    )
    model.add_argument(
        "--policy",
        choices=POLICIES,
        help="ablations of learned attention: 'random' moves, every "
        "glimpse at the 'center', or the 'oracle' (at the target box's centre; needs boxes) "
        f"(default: {TRAIN_DEFAULTS['policy']})",
    )
    model.add_argument(
        "--recipe",
        choices=RECIPES,
        help="training recipe: 'paper' is the published code's, "
        "'robust' learns where to look (README, 'Does it learn?'); the ingredient flags below "
        f"override single ingredients (default: {TRAIN_DEFAULTS['recipe']})",
    )
    model.add_argument("--glimpses", type=positive_int, help="T, glimpses per image (default: 8)")
    model.add_argument("--glimpse-size", type=positive_int, help="g, cells per side of each retina scale (default: 12)")
    model.add_argument("--scales", type=positive_int, help="S, retina scales (default: 4)")
    model.add_argument(
        "--retina-mode",
        choices=RETINA_MODES,
        help="how the retina samples each cell: 'bilinear' "
        "(the paper's) or 'area' (the exact mean over the cell, anti-aliased) (default: bilinear)",
    )
    model.add_argument("--hidden-size", type=positive_int, help="LSTM/feature width (default: 128)")
    _add_recipe_options(train)
    run = train.add_argument_group("training")
    run.add_argument(
        "--epochs", type=positive_int, help=f"epochs (default: {EMBEDDED_EPOCHS} on the embedded sets, else 100)"
    )
    run.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"images per step (default: {EMBEDDED_BATCH_SIZE} on the embedded sets, else 128)",
    )
    run.add_argument("--lr", type=positive_float, help=f"Adam's learning rate (default: {TRAIN_DEFAULTS['lr']})")
    run.add_argument(
        "--lr-patience",
        type=non_negative_int,
        help=f"ReduceLROnPlateau patience, in epochs (default: {TRAIN_DEFAULTS['lr_patience']})",
    )
    run.add_argument(
        "--weight-decay",
        type=non_negative_float,
        help=f"Adam's weight decay (default: {TRAIN_DEFAULTS['weight_decay']})",
    )
    run.add_argument("--grad-clip", type=positive_float, help="clip the gradient norm to this (default: no clip)")
    run.add_argument(
        "--seed",
        type=non_negative_int,
        help=f"seed of the weights, data order and moves (default: {TRAIN_DEFAULTS['seed']})",
    )
    run.add_argument(
        "--device", type=device_name, help=f"auto, cpu, cuda or cuda:N (default: {TRAIN_DEFAULTS['device']})"
    )
    run.add_argument("--amp", action="store_true", help="bf16 autocast")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA graphs on GPU)")
    run.add_argument(
        "--workers",
        type=non_negative_int,
        help=f"DataLoader workers (image folders) (default: {TRAIN_DEFAULTS['workers']})",
    )
    run.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="start from this run's weights (best.pt/last.pt; same variant, policy and sizes), e.g. "
        "a run on smaller canvases (default: fresh weights)",
    )
    run.add_argument("--out", metavar="RUNDIR", help="run directory (default: runs/<variant>-<data>-<time>)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last.pt, with its "
        "saved settings (--epochs may extend it; other changed settings are refused)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar (the per-epoch lines remain)")

    evaluate = commands.add_parser(
        "eval",
        help="accuracy, glimpses used and latency of a checkpoint",
        formatter_class=HelpFormatter,
        parents=[common],
        description="Top-1/top-5 accuracy, mean glimpses used and per-image latency of a "
        "gdram checkpoint or a published GDRAM state dict.",
    )
    _add_checkpoint_options(evaluate, ("test", "val"), "which split to evaluate")
    evaluate.add_argument("--fast", action="store_true", help="F-GDRAM: stop glimpsing early when confident")
    evaluate.add_argument("--batch-size", type=positive_int, default=256, help="images per evaluation batch")
    evaluate.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object (null for a non-finite number)")

    visualize = commands.add_parser(
        "visualize",
        help="draw glimpse trajectories (PNG grid or animated GIF)",
        formatter_class=HelpFormatter,
        parents=[common],
        description="Draw every glimpse (each scale's square, the path, each weight; "
        "green correct, red wrong) over images of the test split.",
    )
    _add_checkpoint_options(visualize, ("test", "val", "train"), "which split to draw")
    visualize.add_argument("--n", type=positive_int, default=16, help="number of images")
    visualize.add_argument(
        "--out",
        default="glimpses.png",
        metavar="FILE.png|FILE.gif",
        help="the picture: a PNG grid, or an animated GIF with one frame per glimpse",
    )
    visualize.add_argument("--fast", action="store_true", help="F-GDRAM: draw only the glimpses it uses")
    visualize.add_argument(
        "--zoom", type=positive_int, default=2, help="pixels per image pixel (the picture is limited in size)"
    )
    visualize.add_argument("--seed", type=non_negative_int, default=0, help="which images (a seeded random pick)")
    visualize.add_argument("--device", type=device_name, default="cpu", help="auto, cpu, cuda or cuda:N")
    for subcommand in (train, evaluate, visualize):
        subcommand.set_defaults(usage_error=subcommand.error)
    return parser


def _data_spec(args: argparse.Namespace, fallback: dict[str, Any] | None) -> dict[str, Any]:
    """The ``load_data`` arguments: the data flags given, over the checkpoint's (``fallback``), over the defaults."""
    spec = (
        dict(fallback)
        if fallback is not None
        else {"source": "cluttered-digits", "root": None, "image_size": None, "val_fraction": VAL_FRACTION}
    )
    source = args.data or args.dataset
    if source is not None:
        spec = {key: value for key, value in spec.items() if key not in ("fingerprint", "generator")}
        spec["source"] = source
    if args.data_root is not None:
        spec["root"] = args.data_root
    if args.image_size is not None:
        spec["image_size"] = list(args.image_size)
    if args.val_fraction is not None:
        spec["val_fraction"] = args.val_fraction
    return spec


def _load(spec: dict[str, Any], download: bool = False) -> DataSplits:
    if spec["source"] in EMBEDDED_SPECS:
        check_cache(EMBEDDED_SPECS[spec["source"]])
    return load_data(
        spec["source"],
        root=spec.get("root"),
        download=download,
        val_fraction=spec.get("val_fraction", VAL_FRACTION),
        seed=spec.get("seed", 0),
        image_size=tuple(spec["image_size"]) if spec.get("image_size") else None,
    )


def _load_training_data(spec: dict[str, Any], download: bool, show_warnings: bool) -> DataSplits:
    """The data to train on, its classes checked (warnings on stderr, by the main process only)."""
    data = _load(spec, download)
    warnings = check_classes(data)
    if show_warnings:
        for warning in warnings:
            print(f"gdram train: warning: {warning}", file=sys.stderr)
    return data


def _check_out_place(out: Path, folder: Path | None = None) -> None:
    """Refuse ``--out`` when its ``folder`` (default: ``out`` itself) is a file, lies below one, or cannot be
    created or written."""
    folder = out if folder is None else folder
    existing = next(place for place in (folder, *folder.parents) if place.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} exists and is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot write in {existing} (read-only or no permission)")


def _check_new_run_dir(out: Path) -> None:
    """Refuse, for a new run, a folder that holds a run or files of its own (checked while holding its lock).

    A gdram run stopped before it wrote ``last.pt`` (only ``config.json``, maybe the first ``best.pt``)
    cannot be resumed: a new run takes its place."""
    if (out / "last.pt").exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if not out.is_dir():
        return
    foreign = foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(
            f"--out {out} is a folder that is not a gdram run (it holds {shown}); a new run writes only "
            "into a new or empty folder: choose another --out"
        )
    if (out / "summary.json").exists():  # a finished run whose last.pt is gone: its results are kept
        raise ValueError(
            f"--out {out} holds a finished gdram run (summary.json) but no last.pt to resume; choose another --out"
        )


def _inside_data(out: Path, spec: dict[str, Any]) -> str | None:
    """Why ``out`` cannot be a run directory of a run on ``spec``'s data (inside its image folder), or None."""
    source = Path(spec["source"])
    if spec["source"] in DATASETS or not source.is_dir():
        return None
    folder, place = source.resolve(), out.resolve()
    if place == folder or folder in place.parents:
        return (
            f"the run directory {out} lies inside the image folder {spec['source']}: its files would "
            "become images of the data set; choose an --out outside it"
        )
    return None


def _claim(out: Path, place: Distributed, held: contextlib.ExitStack, create: bool = True) -> None:
    """Own the run directory ``out`` until the command ends (the main process; the others only read)."""
    if place.is_main:
        held.enter_context(lock_run_dir(out, create=create))


def _refuse_ignored_flags(args: argparse.Namespace) -> None:
    if (args.variant or TRAIN_DEFAULTS["variant"]) == "cnn":
        given = [flag for name, flag in ATTENTION_FLAGS.items() if getattr(args, name) is not None]
        if given:
            raise _UsageError(f"{', '.join(given)}: the CNN baseline (--variant cnn) has no glimpses")


def _refuse_changed_settings(args: argparse.Namespace, saved: dict[str, Any]) -> None:
    """A resumed run keeps its saved settings: refuse a flag that asks for another value."""
    config, train, data = saved["config"], saved.get("train", {}), saved.get("data") or {}
    asked = {
        "--variant": (args.variant, config.get("variant")),
        "--glimpses": (args.glimpses, config.get("num_glimpses")),
        "--glimpse-size": (args.glimpse_size, config.get("glimpse_size")),
        "--scales": (args.scales, config.get("num_scales")),
        "--retina-mode": (args.retina_mode, config.get("retina_mode")),
        "--hidden-size": (args.hidden_size, config.get("hidden_size")),
        "--policy": (args.policy, GDRAMConfig.from_dict(config, train).policy),
        "--batch-size": (args.batch_size, train.get("batch_size")),
        "--lr": (args.lr, train.get("lr")),
        "--lr-patience": (args.lr_patience, train.get("lr_patience")),
        "--weight-decay": (args.weight_decay, train.get("weight_decay")),
        "--grad-clip": (args.grad_clip, train.get("grad_clip")),
        "--seed": (args.seed, train.get("seed")),
        "--device": (args.device, train.get("device")),
        "--workers": (args.workers, train.get("num_workers")),
        "--amp": (args.amp or None, train.get("amp")),
        "--compile": (args.compile or None, train.get("compile")),
        "--recipe": (args.recipe, config.get("recipe", "paper")),
        "--location-guidance": (args.location_guidance, train.get("location_guidance", 0.0)),
        "--guidance-weight": (args.guidance_weight, train.get("guidance_weight", 10.0)),
        "--init-from": (args.init_from, train.get("init_from")),
        **{
            "--" + name.replace("_", "-"): (_as_stored(getattr(args, name)), _as_stored(config.get(name)))
            for name in INGREDIENT_FLAGS
        },
        "--image-size": (list(args.image_size) if args.image_size else None, data.get("image_size")),
        "--val-fraction": (args.val_fraction, data.get("val_fraction", VAL_FRACTION)),
    }
    changed = [
        f"{flag} {given} (the run has {kept})"
        for flag, (given, kept) in asked.items()
        if given is not None and given != kept
    ]
    if args.epochs is not None and args.epochs < saved["epoch"]:
        changed.append(f"--epochs {args.epochs} (the total; the run has already trained {saved['epoch']})")
    if changed:
        raise _UsageError(
            f"--resume continues a run with its saved settings, refusing {'; '.join(changed)}; only "
            "--epochs and --quiet change a resumed run (start a new run to change the others)"
        )


def _as_stored(value: Any) -> Any:
    """A setting as a checkpoint's config stores it (a pair such as ``--sigma-range`` as a list)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def _resumed_data_spec(args: argparse.Namespace, saved: dict[str, Any] | None, out: Path) -> dict[str, Any]:
    """The saved data description, checked against the data now found; or the data given, if it is the same."""
    owner = f"the run in {out}"
    if args.data or args.dataset:
        spec = locate(_data_spec(args, saved))
        if not same_data(saved, spec):
            raise DataError(
                f"{spec['source']} is not the data set {owner} was trained on ({saved['source']}); a "
                "resumed run continues on its own data (start a new run to train on other data)"
            )
        return spec
    spec = _data_spec(args, saved)
    if saved is not None:
        verify(saved, owner)
    return spec


def _train(args: argparse.Namespace) -> int:
    place = init_distributed(args.device or TRAIN_DEFAULTS["device"])
    with contextlib.ExitStack() as held:  # the run directory's lock, given up however the command ends
        trainer = _resumed_trainer(args, place, held) if args.resume else _new_trainer(args, place, held)
        if place.is_main:
            print(f"gdram train: run directory {trainer.run_dir}", file=sys.stderr)
        summary = trainer.fit()
    if place.is_main:
        policy = "" if summary["variant"] == "cnn" else f" ({summary['policy']} policy)"
        print(
            f"{summary['variant']}{policy} on {summary['dataset']}: test top-1 "
            f"{summary['test_top1']:.4f} top-5 {summary['test_top5']:.4f} (n={summary['test_n']})"
            + ("" if summary["test_hit_rate"] is None else f", glimpse hit rate {summary['test_hit_rate']:.3f}")
            + f", best val {summary['best_val_top1']:.4f} at epoch {summary['best_epoch']}/{summary['epochs']}, "
            f"{summary['train_seconds']:.0f}s training; run {summary['run_dir']}"
        )
    return 0


def _resumed_trainer(args: argparse.Namespace, place: Distributed, held: contextlib.ExitStack) -> Trainer:
    """The trainer of ``--resume --out RUNDIR``, its directory locked, its checkpoint and data checked."""
    if args.out is None:
        raise _UsageError("--resume needs --out RUNDIR, the run to continue")
    out = Path(args.out)
    if not (out / "last.pt").exists():
        raise ValueError(f"--resume: {out} holds no run to continue (no last.pt)")
    _claim(out, place, held, create=False)
    args.run_dir = out
    saved = load_checkpoint(out / "last.pt")
    check_resumable(saved, out / "last.pt")
    _refuse_changed_settings(args, saved)
    spec = _resumed_data_spec(args, saved.get("data"), out)
    inside = _inside_data(out, spec)
    if inside:
        raise ValueError(inside)
    data = _load_training_data(spec, args.download, place.is_main)
    remove_stale_temporaries(out)
    trainer = Trainer.resume(out, data, epochs=args.epochs, quiet=args.quiet)
    trainer.data_spec = spec
    return trainer


def _new_trainer(args: argparse.Namespace, place: Distributed, held: contextlib.ExitStack) -> Trainer:
    """The trainer of a new run: every flag and the run directory checked (and locked) before the data is loaded."""
    _refuse_ignored_flags(args)
    spec = locate(_data_spec(args, None))
    chosen = {
        "num_glimpses": args.glimpses,
        "glimpse_size": args.glimpse_size,
        "num_scales": args.scales,
        "retina_mode": args.retina_mode,
        "hidden_size": args.hidden_size,
    }
    chosen.update({name: getattr(args, name) for name in INGREDIENT_FLAGS})
    overrides = {name: value for name, value in chosen.items() if value is not None}
    flags = {
        name: TRAIN_DEFAULTS[name] if getattr(args, name) is None else getattr(args, name) for name in TRAIN_DEFAULTS
    }
    _model_config(flags, overrides, num_classes=2, in_channels=1, image_size=MAX_IMAGE_SIDE)  # the flags alone
    out = Path(args.out) if args.out else None
    if out is not None:
        inside = _inside_data(out, spec)
        if inside:
            raise _UsageError(inside)
        _check_out_place(out)
        _claim(out, place, held)
        args.run_dir = out
        _check_new_run_dir(out)
    data = _load_training_data(spec, args.download, place.is_main)
    if out is None:
        out = Path("runs") / f"{flags['variant']}-{Path(data.name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        inside = _inside_data(out, spec)
        if inside:
            raise ValueError(inside)
        if place.is_main:
            out = held.enter_context(claim_new_run_dir(out)).run_dir
        args.run_dir = out
    remove_stale_temporaries(out)
    config = _model_config(flags, overrides, data.num_classes, data.in_channels, data.image_size)
    check_model_size(config)
    embedded = spec["source"] in EMBEDDED_SETS
    epochs = args.epochs if args.epochs is not None else (EMBEDDED_EPOCHS if embedded else 100)
    batch_size = args.batch_size if args.batch_size is not None else (EMBEDDED_BATCH_SIZE if embedded else 128)
    settings = TrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        lr=flags["lr"],
        lr_patience=flags["lr_patience"],
        weight_decay=flags["weight_decay"],
        grad_clip=args.grad_clip,
        seed=flags["seed"],
        device=flags["device"],
        amp=args.amp,
        compile=args.compile,
        num_workers=flags["workers"],
        location_guidance=flags["location_guidance"],
        guidance_weight=flags["guidance_weight"],
        init_from=args.init_from,
    )
    return Trainer(config, data, settings, out, spec, quiet=args.quiet)


def _model_config(
    flags: dict[str, Any],
    overrides: dict[str, Any],
    num_classes: int,
    in_channels: int,
    image_size: int | tuple[int, int],
) -> GDRAMConfig:
    """The model's config from the flags; a field the flags set that it refuses is a usage error naming the flag."""
    try:
        return GDRAMConfig(
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            variant=flags["variant"],
            policy=flags["policy"],
            recipe=flags["recipe"],
            **overrides,
        )
    except ValueError as error:
        field = str(error).split(" ", 1)[0]
        if field in overrides:
            raise _UsageError(f"argument {FIELD_FLAGS[field]}: {error}") from None
        raise


def _split(data: DataSplits, name: str):
    return {"train": data.train, "val": data.val, "test": data.test}[name]


def _load_for_eval(args: argparse.Namespace):
    device = resolve_device(args.device)
    state = load_state_file(args.checkpoint)
    loaded = model_from_state(state, args.checkpoint, device)
    if loaded.kind == "official" and not (args.data or args.dataset):
        raise ValueError(
            f"{args.checkpoint} is a published state dict with no data set attached: pass --dataset or --data"
        )
    if loaded.data is not None and not (args.data or args.dataset):
        verify(loaded.data, args.checkpoint)
    data = _load(_data_spec(args, loaded.data), args.download)
    if loaded.kind == "official":  # the published files do not say their image size: the data's
        loaded = model_from_state(state, args.checkpoint, device, image_size=data.image_size)
    config = loaded.model.config
    if (config.in_channels, tuple(config.image_hw)) != (data.in_channels, tuple(data.image_size)):
        raise ValueError(
            f"{args.checkpoint} expects {config.in_channels}x{config.image_hw[0]}x{config.image_hw[1]} "
            f"images but {data.name} has {data.in_channels}x{data.image_size[0]}x{data.image_size[1]}"
        )
    check_model_classes(config.num_classes, data, args.checkpoint)
    if args.fast and config.variant == "cnn":
        raise ValueError(f"--fast stops glimpsing early, but {args.checkpoint} is the CNN baseline (no glimpses)")
    return loaded, data, device


def _json_value(value: Any) -> Any:
    """``value``, or None for a NaN or infinite float (JSON has no such numbers)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _eval(args: argparse.Namespace) -> int:
    loaded, data, device = _load_for_eval(args)
    dataset = _split(data, args.split)
    policy = loaded.model.config.policy
    result: dict[str, Any] = summarize(evaluation_totals(loaded.model, dataset, args.batch_size, device, args.fast))
    result["sampled_top1"] = result["top1"]
    if policy == "learned" and loaded.model.config.variant != "cnn":
        sampled = evaluation_totals(loaded.model, dataset, args.batch_size, device, args.fast, sample=True)
        result["sampled_top1"] = summarize(sampled)["top1"]
    if not args.no_latency:
        result.update(measure_latency(loaded.model, dataset, device, args.fast, min(args.batch_size, 128)))
    variant = loaded.model.config.variant
    result.update(
        checkpoint=str(args.checkpoint),
        kind=loaded.kind,
        variant=variant,
        policy=policy,
        dataset=data.name,
        split=args.split,
        fast=args.fast,
        device=str(device),
    )
    if args.json:
        print(json.dumps({key: _json_value(value) for key, value in result.items()}, allow_nan=False))
        return 0
    name = f"F-{variant.upper()}" if args.fast else variant
    line = (
        f"{name} {args.checkpoint} on {data.name} {args.split} (n={result['n']}): top-1 {result['top1']:.4f} "
        f"top-5 {result['top5']:.4f} (sampled path {result['sampled_top1']:.4f}), "
        f"{result['mean_glimpses']:.2f} glimpses/image"
    )
    if result["hit_rate"] is not None:
        line += (
            f", glimpse hit rate {result['hit_rate']:.3f}, {result['box_distance_px']:.1f} px from the target, "
            f"{result['border_share']:.3f} on the border"
        )
    if not args.no_latency:
        line += (
            f", {result['latency_ms_batch1']:.2f} ms/image at batch 1, {result['latency_ms_batched']:.3f} "
            f"ms/image at batch {result['latency_batch_size']} on {device}"
        )
    print(line)
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from gdram.analysis.visualize import draw_frames, draw_grid, save_picture

    out = Path(args.out)
    if out.is_dir():
        raise _UsageError(f"--out {out} is a directory; give a FILE.png or FILE.gif")
    if out.suffix.lower() not in (".png", ".gif"):
        raise _UsageError(f"--out must end in .png or .gif, got {args.out}")
    _check_out_place(out, out.parent)
    loaded, data, _ = _load_for_eval(args)
    if loaded.model.config.policy == "oracle":
        raise ValueError(
            f"{args.checkpoint} was trained with the oracle policy, which looks at the data's target "
            "boxes, not where a policy chooses: there is no learned trajectory to draw"
        )
    dataset = _split(data, args.split)
    count = min(args.n, len(dataset))
    picked = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:count]
    images, labels = next(batches(torch.utils.data.Subset(dataset, picked.tolist()), count))
    images = images.to(next(loaded.model.parameters()).device)
    if out.suffix.lower() == ".gif":
        frames = draw_frames(loaded.model, images, labels, args.fast, args.zoom)
    else:
        frames = [draw_grid(loaded.model, images, labels, args.fast, args.zoom)]
    path = save_picture(frames, out)
    print(f"wrote {path} ({count} images" + (f", {len(frames)} frames)" if len(frames) > 1 else ")"))
    return 0


class _UsageError(Exception):
    """A combination of options argparse cannot check (exit code 2)."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop), handled like Ctrl-C."""


class _StopSignals:
    """SIGINT and SIGTERM while a command runs (main thread only): the first one stops the command.

    A stop signal sent to the process group also stops DataLoader workers, and PyTorch's SIGCHLD
    handler then raises "worker killed" errors anywhere, even in a finaliser during the unwinding.
    Once stopping, those are consequences of the stop, not failures: SIGCHLD goes back to its default,
    unraisable errors are silenced, and :func:`main` reports any error as the stop (exit 130 or 143).

    The stop is raised wherever the main thread is, which can be inside a DataLoader's queue while it
    holds a lock, and the unwinding can then wait on that lock for ever. So the stop also arms a
    watchdog: if the command has not returned ``GRACE_SECONDS`` later, it prints the stop's line and
    exits at once. Nothing is lost by that: every file of a run is written atomically, so any moment
    leaves a run that resumes (the issue-22 interruption tests).
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
    GRACE_SECONDS = 30.0

    def __init__(self, stopped_line: Callable[[bool], str]) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._hook = sys.unraisablehook
        self._stopped_line = stopped_line
        self._watchdog: threading.Timer | None = None

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.getsignal(signum) for signum in self.HANDLED}
            signal.signal(signal.SIGINT, self._stop)
            signal.signal(signal.SIGTERM, self._stop)
            self._hook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if self._previous:
            sys.unraisablehook = self._hook

    @property
    def terminated(self) -> bool:
        return self.signum == signal.SIGTERM

    def _stop(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # already stopping: the cleanup finishes, then the command exits
            return
        self.signum = signum
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # workers stopped by the same signal are no error
        self._watchdog = threading.Timer(self.GRACE_SECONDS, self._exit_now)
        self._watchdog.daemon = True
        self._watchdog.start()
        raise _Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def _exit_now(self) -> None:
        """The watchdog: the unwinding is stuck; report the stop and leave without waiting for it."""
        print(self._stopped_line(self.terminated), file=sys.stderr, flush=True)
        os._exit(143 if self.terminated else 130)

    def _unraisable(self, unraisable: Any) -> None:
        if self.signum is None:
            self._hook(unraisable)


def _stopped_line(args: argparse.Namespace, terminated: bool) -> str:
    """What an interrupted command prints: on a new line, with how to resume a run that has a checkpoint."""
    line = f"\ngdram {args.command}: {'terminated' if terminated else 'interrupted'}"
    run_dir = getattr(args, "run_dir", None)
    if run_dir is not None:
        if (run_dir / "last.pt").is_file():
            line += f"; resume with: gdram train --resume --out {shlex.quote(str(run_dir))}"
        else:
            line += f"; no checkpoint was written in {run_dir} yet"
    return line


def _out_of_memory(error: Exception) -> bool:
    """Whether ``error`` is an allocation failure: Python's, CUDA's, or the CPU allocator's ``RuntimeError``."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def _failure_line(args: argparse.Namespace, error: Exception) -> str:
    """One line for an error: the message of a user error, or the exception and where its traceback is."""
    if _out_of_memory(error):
        return f"gdram {args.command}: error: out of memory ({error_line(error)[:200]}); lower --batch-size"
    if isinstance(error, OSError) and error.filename is None and getattr(args, "run_dir", None) is not None:
        return f"gdram {args.command}: error: {error_line(error)} (run directory {args.run_dir})"
    if isinstance(error, USER_ERRORS):
        return f"gdram {args.command}: error: {error_line(error)}"
    where = write_traceback(error, getattr(args, "run_dir", None))
    kept = f"full traceback in {where}" if where else "rerun with --debug for the full traceback"
    return f"gdram {args.command}: internal error: {type(error).__name__}: {error_line(error)} ({kept})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gdram`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.run_dir = None  # the run directory, once known: for the interrupt hint and the traceback file
    command = {"train": _train, "eval": _eval, "visualize": _visualize}[args.command]
    with _StopSignals(lambda terminated: _stopped_line(args, terminated)) as stop:
        try:
            return command(args)
        except _UsageError as error:
            args.usage_error(str(error))
        except KeyboardInterrupt as error:
            print(_stopped_line(args, stop.terminated or isinstance(error, _Terminated)), file=sys.stderr)
            return 143 if stop.terminated or isinstance(error, _Terminated) else 130
        except Exception as error:
            if stop.signum is not None:  # an error the stop caused (a DataLoader worker it killed)
                print(_stopped_line(args, stop.terminated), file=sys.stderr)
                return 143 if stop.terminated else 130
            if args.debug:
                raise
            print(_failure_line(args, error), file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
