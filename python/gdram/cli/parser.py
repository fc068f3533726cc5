"""The ``gdram`` command line's parser: every command, flag, type and help text.

The training flags default to None, so that ``--resume`` tells a flag given from one left out; what applies
when one is left out is :class:`~gdram.models.config.GDRAMConfig`'s or
:class:`~gdram.training.trainer.TrainSettings`' default, which the help shows. :func:`flag` names the flag of a
config field, training setting or data option (for messages about refused settings).
"""

from __future__ import annotations

import argparse
from importlib import metadata
from typing import Any

from gdram.cli.options import (
    HelpFormatter,
    OneLineParser,
    device_name,
    image_size,
    non_negative_float,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_int,
    unit_fraction,
)
from gdram.data.loading import DATASETS
from gdram.models.config import (
    MOVES,
    POLICIES,
    POLICY_TRAINS,
    RECIPES,
    RETINA_MODES,
    REWARDS,
    VARIANTS,
    WARMUP_GLIMPSES,
    GDRAMConfig,
)
from gdram.models.tnet_config import POOLINGS, SAMPLINGS, TNetConfig
from gdram.training.api import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, EMBEDDED_BATCH_SIZE, EMBEDDED_EPOCHS, VAL_FRACTION
from gdram.training.families import FAMILIES
from gdram.training.trainer import TrainSettings

HELP_DEFAULTS: dict[str, Any] = {
    "variant": GDRAMConfig.variant,
    "policy": GDRAMConfig.policy,
    "recipe": GDRAMConfig.recipe,
    "lr": TrainSettings.lr,
    "lr_patience": TrainSettings.lr_patience,
    "weight_decay": TrainSettings.weight_decay,
    "seed": TrainSettings.seed,
    "device": TrainSettings.device,
    "workers": TrainSettings.num_workers,
    "location_guidance": TrainSettings.location_guidance,
    "guidance_weight": TrainSettings.guidance_weight,
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
    "warmup_glimpses",
)
# The config fields and training settings whose flag is not their name with dashes.
_FLAGS = {"num_glimpses": "--glimpses", "num_scales": "--scales", "num_workers": "--workers"}


def flag(name: str) -> str:
    """The flag that sets a config field, training setting or data option (``num_glimpses`` -> ``--glimpses``)."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def config_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the ``train`` flags give (those left out: absent), of ``--model``'s family."""
    if args.model == "tnet":
        return _given({"policy": args.policy, "retina_mode": args.retina_mode, **_tnet_fields(args)})
    return _given(_gdram_fields(args))


def misplaced_flags(args: argparse.Namespace) -> list[str]:
    """The ``train`` flags given that belong to the other model family than ``--model``'s."""
    gdram_only = {**_gdram_fields(args), "location_guidance": args.location_guidance}
    gdram_only.update(guidance_weight=args.guidance_weight)
    other = gdram_only if args.model == "tnet" else _tnet_fields(args)
    shared = ("policy", "retina_mode", "policy_warmup")
    return [flag(name) for name, value in other.items() if value is not None and name not in shared]


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _tnet_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "levels": args.levels,
        "grid_size": args.grid_size,
        "cell_fraction": args.cell_fraction,
        "cells_per_level": tuple(args.cells_per_level) if args.cells_per_level else None,
        "base_size": args.base_size,
        "overview_size": args.overview_size,
        "backbone": args.backbone,
        "feature_size": args.feature_size,
        "pooling": args.pooling,
        "reinforce_weight": args.reinforce_weight,
        "per_feature_weight": args.per_feature_weight,
        "sampling": args.sampling,
        "policy_warmup": args.policy_warmup,
        "salient_window": args.salient_window,
    }


def _gdram_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "variant": args.variant,
        "policy": args.policy,
        "recipe": args.recipe,
        "num_glimpses": args.glimpses,
        "glimpse_size": args.glimpse_size,
        "num_scales": args.scales,
        "retina_mode": args.retina_mode,
        "hidden_size": args.hidden_size,
        **{name: getattr(args, name) for name in INGREDIENT_FLAGS},
    }


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~gdram.training.trainer.TrainSettings` fields the ``train`` flags give (left out: absent)."""
    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_patience": args.lr_patience,
        "weight_decay": args.weight_decay,
        "grad_clip": args.grad_clip,
        "seed": args.seed,
        "device": args.device,
        "amp": args.amp or None,
        "compile": args.compile or None,
        "num_workers": args.workers,
        "location_guidance": args.location_guidance,
        "guidance_weight": args.guidance_weight,
        "init_from": args.init_from,
    }
    return {name: value for name, value in settings.items() if value is not None}


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
        help="first epochs without the policy gradient: GDRAM's classifier learns from the warm-up's glimpses "
        "(robust: 2), TNet's from the cells nearest each image's salient place (2)",
    )
    recipe.add_argument(
        "--warmup-glimpses",
        choices=WARMUP_GLIMPSES,
        help="where the warm-up's glimpses go: the initial policy's samples (paper), or each image's most "
        "salient place, which also pulls the first glimpse there; no boxes needed (robust)",
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
        f"(default: {HELP_DEFAULTS['location_guidance']}, pure REINFORCE)",
    )
    guidance.add_argument(
        "--guidance-weight",
        type=non_negative_float,
        metavar="W",
        help=f"weight of the guidance loss (default: {HELP_DEFAULTS['guidance_weight']})",
    )


def _add_tnet_options(parser: argparse.ArgumentParser) -> None:
    defaults = TNetConfig()
    tnet = parser.add_argument_group("TNet (--model tnet; default: TNetConfig's value)")
    tnet.add_argument(
        "--levels", type=positive_int, help=f"processing levels; 1 reads the whole image only ({defaults.levels})"
    )
    tnet.add_argument(
        "--grid-size", type=positive_int, help=f"n: the n x n cells scored in each box ({defaults.grid_size})"
    )
    tnet.add_argument(
        "--cell-fraction",
        type=open_fraction,
        metavar="F",
        help=f"a cell's side over its box's ({defaults.cell_fraction})",
    )
    tnet.add_argument(
        "--cells-per-level",
        type=positive_int,
        nargs="+",
        metavar="K",
        help="cells kept in each box, one count per level after the first "
        f"({' '.join(map(str, defaults.cells_per_level))})",
    )
    tnet.add_argument(
        "--base-size",
        type=positive_int,
        help=f"side every cell is resized to for the backbone ({defaults.base_size})",
    )
    tnet.add_argument(
        "--overview-size",
        type=positive_int,
        metavar="PX",
        help=f"side of level 1's read of the whole image (base size / cell fraction: {defaults.overview_side})",
    )
    tnet.add_argument(
        "--backbone",
        help="'small_cnn' or a torchvision classifier (resnet18, efficientnet_b0, ...), random weights "
        f"({defaults.backbone})",
    )
    tnet.add_argument("--feature-size", type=positive_int, help=f"width of each feature ({defaults.feature_size})")
    tnet.add_argument(
        "--pooling",
        choices=POOLINGS,
        help=f"a feature map's vector: each channel's maximum or mean over the map ({defaults.pooling})",
    )
    tnet.add_argument(
        "--reinforce-weight",
        type=non_negative_float,
        metavar="W",
        help=f"weight of REINFORCE on the chosen cells ({defaults.reinforce_weight})",
    )
    tnet.add_argument(
        "--per-feature-weight",
        type=non_negative_float,
        metavar="W",
        help=f"weight of every feature's own cross-entropy ({defaults.per_feature_weight})",
    )
    tnet.add_argument(
        "--salient-window",
        type=positive_int,
        metavar="PX",
        help=f"side of the square whose contrast the warm-up's salient place maximises ({defaults.salient_window})",
    )
    tnet.add_argument(
        "--sampling",
        choices=SAMPLINGS,
        help=f"training's cell choice: the top k, or Gumbel top-k sampled without replacement ({defaults.sampling})",
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
        "--model",
        choices=tuple(FAMILIES),
        help="model family: GDRAM and its variants (--variant), or TNet (top-down attention over an image pyramid, "
        "its flags below) (default: gdram)",
    )
    model.add_argument(
        "--variant",
        choices=VARIANTS,
        help=f"attention variant or the CNN baseline (default: {HELP_DEFAULTS['variant']})",
    )
    model.add_argument(
        "--policy",
        choices=POLICIES,
        help="ablations of learned attention: 'random' moves, every "
        "glimpse at the 'center', or the 'oracle' (at the target box's centre; needs boxes); TNet: "
        "'learned', 'random' or 'oracle' cells (the oracle's: those nearest the target box's centre; needs boxes) "
        f"(default: {HELP_DEFAULTS['policy']})",
    )
    model.add_argument(
        "--recipe",
        choices=RECIPES,
        help="training recipe: 'paper' is the published code's, "
        "'robust' learns where to look (README, 'Does it learn?'); the ingredient flags below "
        f"override single ingredients (default: {HELP_DEFAULTS['recipe']})",
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
    _add_tnet_options(train)
    run = train.add_argument_group("training")
    run.add_argument(
        "--epochs",
        type=positive_int,
        help=f"epochs (default: {EMBEDDED_EPOCHS} on the embedded sets, else {DEFAULT_EPOCHS})",
    )
    run.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"images per step (default: {EMBEDDED_BATCH_SIZE} on the embedded sets, else {DEFAULT_BATCH_SIZE})",
    )
    run.add_argument("--lr", type=positive_float, help=f"Adam's learning rate (default: {HELP_DEFAULTS['lr']})")
    run.add_argument(
        "--lr-patience",
        type=non_negative_int,
        help=f"ReduceLROnPlateau patience, in epochs (default: {HELP_DEFAULTS['lr_patience']})",
    )
    run.add_argument(
        "--weight-decay",
        type=non_negative_float,
        help=f"Adam's weight decay (default: {HELP_DEFAULTS['weight_decay']})",
    )
    run.add_argument("--grad-clip", type=positive_float, help="clip the gradient norm to this (default: no clip)")
    run.add_argument(
        "--seed",
        type=non_negative_int,
        help=f"seed of the weights, data order and moves (default: {HELP_DEFAULTS['seed']})",
    )
    run.add_argument(
        "--device", type=device_name, help=f"auto, cpu, cuda or cuda:N (default: {HELP_DEFAULTS['device']})"
    )
    run.add_argument("--amp", action="store_true", help="bf16 autocast")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA graphs on GPU)")
    run.add_argument(
        "--workers",
        type=non_negative_int,
        help=f"DataLoader workers (image folders) (default: {HELP_DEFAULTS['workers']})",
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
        help="draw glimpse trajectories or TNet's chosen cells (PNG grid or animated GIF)",
        formatter_class=HelpFormatter,
        parents=[common],
        description="Draw every glimpse (each scale's square, the path, each weight; "
        "green correct, red wrong) over images of the test split; for a TNet, the cells each level chose, "
        "nested (a GIF adds one level per frame).",
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
