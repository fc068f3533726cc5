"""The ``gdram`` command line: ``train``, ``eval`` and ``visualize`` (also ``python -m gdram``).

Exit codes: 0 success, 2 usage error, 1 bad input or a failed run (one line on stderr, no
traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gdram.checkpoint import CheckpointError, load_checkpoint
from gdram.config import POLICY_TRAINS, RECIPES, REWARDS, VARIANTS, GDRAMConfig
from gdram.data import DATASETS, DataError, DataSplits, batches, load_data
from gdram.evaluate import POLICIES, evaluation_totals, load_model, measure_latency, summarize
from gdram.train import Trainer, TrainingDiverged, TrainSettings, init_distributed, resolve_device

EMBEDDED_SETS = ("cluttered-digits", "cluttered-digits-128")
EMBEDDED_EPOCHS = 6  # the embedded sets' few-minute CPU budget (see README, "Does it learn?")
EMBEDDED_BATCH_SIZE = 32  # more steps in that budget than the paper's 128
INGREDIENT_FLAGS = ("sigma_range", "weight_trains_sigma", "unclipped_log_prob", "policy_trains", "zero_init_mu",
                    "baseline_init", "context_mode", "reward", "normalize_advantage", "policy_lr_scale")


def _image_size(text: str) -> tuple[int, int]:
    """``"128"`` or ``"96x128"`` (H x W) -> (H, W)."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {text!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW with positive sides, got {text!r}")
    return (parts[0], parts[-1])


def _add_data_options(parser: argparse.ArgumentParser, default_help: str) -> None:
    group = parser.add_argument_group("data")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=DATASETS, help=f"a named data set ({default_help})")
    source.add_argument("--data", metavar="PATH", help="a .npz file (x_train, y_train, x_test, y_test[, x_val, y_val]) "
                                                        "or an ImageFolder directory")
    group.add_argument("--data-root", metavar="DIR", help="where torchvision data sets live (~/.cache/gdram/data)")
    group.add_argument("--download", action="store_true", help="download a missing torchvision data set")
    group.add_argument("--image-size", type=_image_size, metavar="N|HxW", help="resize the images to this size")
    group.add_argument("--val-fraction", type=float, default=0.1,
                       help="training share held out for validation when the data has no validation split")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gdram", description="Train, evaluate and look at glimpse-attention "
                                     "classifiers (Gaussian Deep Recurrent Attention Models).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,visualize}")

    train = commands.add_parser("train", help="train a model; with no options, GDRAM on the embedded data set",
                                description="Train, validate every epoch, keep the best checkpoint by validation "
                                "accuracy, evaluate it on the test split and print a one-line summary.")
    _add_data_options(train, "default: cluttered-digits, embedded, no network needed")
    model = train.add_argument_group("model")
    model.add_argument("--variant", choices=VARIANTS, default="gdram", help="attention variant or the CNN baseline")
    model.add_argument("--policy", choices=POLICIES, default="learned",
                       help="ablations of learned attention: 'random' moves, every glimpse at the 'center', or the "
                       "'oracle' (at the target box's centre: needs boxes)")
    model.add_argument("--recipe", choices=RECIPES, default="robust",
                       help="training recipe: 'paper' is the published code's; 'robust' learns where to look "
                       "(README, 'Does it learn?'); the flags below override single ingredients")
    recipe = train.add_argument_group("recipe ingredients (default: the recipe's value; see GDRAMConfig)")
    recipe.add_argument("--sigma-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="range of the learned sigma of a move (paper 0.61 1.65, robust 0.05 0.25)")
    recipe.add_argument("--weight-trains-sigma", action=argparse.BooleanOptionalAction,
                        help="let the classification loss train sigma through the uncertainty weight (paper)")
    recipe.add_argument("--unclipped-log-prob", action=argparse.BooleanOptionalAction,
                        help="REINFORCE on the log-density of the sample before its clip (robust)")
    recipe.add_argument("--policy-trains", choices=POLICY_TRAINS,
                        help="what the policy gradient trains: the emission head (paper) or the where pathway: "
                        "emission, upper core, context network (robust)")
    recipe.add_argument("--zero-init-mu", action=argparse.BooleanOptionalAction,
                        help="start the mu head at zero (robust)")
    recipe.add_argument("--baseline-init", type=float, metavar="B",
                        help="the baseline's initial output in (0, 1) (robust: 1 / classes)")
    recipe.add_argument("--context-mode", choices=("nearest", "bilinear", "area"),
                        help="the context network's downsampling (paper nearest, robust area)")
    recipe.add_argument("--reward", choices=REWARDS, help="final: 1 when the final prediction is right (paper); "
                        "steps: share of right step predictions from the move on (robust)")
    recipe.add_argument("--normalize-advantage", action=argparse.BooleanOptionalAction,
                        help="divide the advantage by its batch standard deviation (robust)")
    recipe.add_argument("--policy-lr-scale", type=float, metavar="S",
                        help="learning rate of what only the policy gradient trains, relative to --lr")
    guidance = train.add_argument_group("location guidance (LG-DRAM)")
    guidance.add_argument("--location-guidance", type=float, default=0.0, metavar="FRACTION",
                          help="share of training images whose target box also trains the policy (0: pure "
                          "REINFORCE; needs boxes)")
    guidance.add_argument("--guidance-weight", type=float, default=1.0, help="weight of the guidance loss")
    model.add_argument("--glimpses", type=int, help="T, glimpses per image (default 8)")
    model.add_argument("--glimpse-size", type=int, help="g, cells per side of each retina scale (default 12)")
    model.add_argument("--scales", type=int, help="S, retina scales (default 4)")
    model.add_argument("--hidden-size", type=int, help="LSTM/feature width (default 128)")
    run = train.add_argument_group("training")
    run.add_argument("--epochs", type=int, help=f"epochs (default {EMBEDDED_EPOCHS} on the embedded sets, else 100)")
    run.add_argument("--batch-size", type=int,
                     help=f"images per step (default {EMBEDDED_BATCH_SIZE} on the embedded sets, else 128)")
    run.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    run.add_argument("--lr-patience", type=int, default=5, help="ReduceLROnPlateau patience, in epochs")
    run.add_argument("--weight-decay", type=float, default=0.0)
    run.add_argument("--grad-clip", type=float, help="clip the gradient norm to this")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--amp", action="store_true", help="bf16 autocast")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA graphs on GPU)")
    run.add_argument("--workers", type=int, default=2, help="DataLoader workers (image folders)")
    run.add_argument("--out", metavar="RUNDIR", help="run directory (default runs/<variant>-<data>-<time>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last.pt (its saved settings; --epochs may extend it)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")

    evaluate = commands.add_parser("eval", help="accuracy, glimpses used and latency of a checkpoint",
                                   description="Top-1/top-5 accuracy, mean glimpses used and per-image latency of a "
                                   "gdram checkpoint or a published GDRAM state dict.")
    evaluate.add_argument("checkpoint", help="best.pt/last.pt of a run, or the authors' published .pth")
    _add_data_options(evaluate, "default: the checkpoint's own data set")
    evaluate.add_argument("--split", choices=("test", "val"), default="test")
    evaluate.add_argument("--fast", action="store_true", help="F-GDRAM: stop glimpsing early when confident")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    visualize = commands.add_parser("visualize", help="draw glimpse trajectories (PNG grid or animated GIF)",
                                    description="Draw every glimpse (each scale's square, the path, each weight; "
                                    "green correct, red wrong) over images of the test split.")
    visualize.add_argument("checkpoint")
    _add_data_options(visualize, "default: the checkpoint's own data set")
    visualize.add_argument("--split", choices=("test", "val", "train"), default="test")
    visualize.add_argument("--n", type=int, default=16, help="number of images")
    visualize.add_argument("--out", default="glimpses.png", metavar="FILE.png|FILE.gif")
    visualize.add_argument("--fast", action="store_true", help="F-GDRAM: draw only the glimpses it uses")
    visualize.add_argument("--zoom", type=int, default=2, help="pixels per image pixel")
    visualize.add_argument("--seed", type=int, default=0, help="which images (a seeded random pick)")
    visualize.add_argument("--device", default="cpu")
    return parser


def _data_spec(args: argparse.Namespace, fallback: dict[str, Any] | None) -> dict[str, Any]:
    """The ``load_data`` arguments from the command line, else from the checkpoint, else the default."""
    source = args.data or args.dataset
    if source is None:
        if fallback is not None:
            return {**fallback, "download": args.download}
        source = "cluttered-digits"
    return {"source": source, "root": args.data_root, "download": args.download,
            "image_size": list(args.image_size) if args.image_size else None, "val_fraction": args.val_fraction}


def _load(spec: dict[str, Any]) -> DataSplits:
    return load_data(spec["source"], root=spec.get("root"), download=spec.get("download", False),
                     val_fraction=spec.get("val_fraction", 0.1), seed=spec.get("seed", 0),
                     image_size=tuple(spec["image_size"]) if spec.get("image_size") else None)


def _train(args: argparse.Namespace) -> int:
    place = init_distributed(args.device)
    out = Path(args.out) if args.out else None
    if args.resume:
        if out is None:
            raise _UsageError("--resume needs --out RUNDIR, the run to continue")
        saved = load_checkpoint(out / "last.pt")
        spec = _data_spec(args, saved.get("data"))
        trainer = Trainer.resume(out, _load(spec), epochs=args.epochs, quiet=args.quiet)
    else:
        spec = _data_spec(args, None)
        data = _load(spec)
        if out is None:
            out = Path("runs") / f"{args.variant}-{Path(data.name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / "last.pt").exists():
            raise ValueError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        chosen = {"num_glimpses": args.glimpses, "glimpse_size": args.glimpse_size, "num_scales": args.scales,
                  "hidden_size": args.hidden_size}
        chosen.update({name: getattr(args, name) for name in INGREDIENT_FLAGS})
        overrides = {name: value for name, value in chosen.items() if value is not None}
        config = GDRAMConfig(num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                             variant=args.variant, recipe=args.recipe, **overrides)
        embedded = spec["source"] in EMBEDDED_SETS
        epochs = args.epochs or (EMBEDDED_EPOCHS if embedded else 100)
        batch_size = args.batch_size or (EMBEDDED_BATCH_SIZE if embedded else 128)
        settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=args.lr, lr_patience=args.lr_patience,
                                 weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed,
                                 device=args.device, amp=args.amp, compile=args.compile, num_workers=args.workers,
                                 policy=args.policy, location_guidance=args.location_guidance,
                                 guidance_weight=args.guidance_weight)
        trainer = Trainer(config, data, settings, out, {key: value for key, value in spec.items() if key != "download"},
                          quiet=args.quiet)
    summary = trainer.fit()
    if place.is_main:
        policy = "" if summary["variant"] == "cnn" else f" ({summary['policy']} policy)"
        print(f"{summary['variant']}{policy} on {summary['dataset']}: test top-1 "
              f"{summary['test_top1']:.4f} top-5 {summary['test_top5']:.4f} (n={summary['test_n']})"
              + ("" if summary["test_hit_rate"] is None else f", hit rate {summary['test_hit_rate']:.3f}")
              + ", best val "
              f"{summary['best_val_top1']:.4f} at epoch {summary['best_epoch']}/{summary['epochs']}, "
              f"{summary['train_seconds']:.0f}s training; run {summary['run_dir']}")
    return 0


def _split(data: DataSplits, name: str):
    return {"train": data.train, "val": data.val, "test": data.test}[name]


def _load_for_eval(args: argparse.Namespace):
    device = resolve_device(args.device)
    loaded = load_model(args.checkpoint, device)
    if loaded.kind == "official" and not (args.data or args.dataset):
        raise ValueError(f"{args.checkpoint} is a published state dict with no data set attached: pass --dataset "
                         "or --data")
    data = _load(_data_spec(args, loaded.data))
    if loaded.kind == "official":
        loaded = load_model(args.checkpoint, device, image_size=data.image_size)
    config = loaded.model.config
    if (config.in_channels, tuple(config.image_hw)) != (data.in_channels, tuple(data.image_size)):
        raise ValueError(f"{args.checkpoint} expects {config.in_channels}x{config.image_hw[0]}x{config.image_hw[1]} "
                         f"images but {data.name} has {data.in_channels}x{data.image_size[0]}x{data.image_size[1]}")
    return loaded, data, device


def _eval(args: argparse.Namespace) -> int:
    loaded, data, device = _load_for_eval(args)
    dataset = _split(data, args.split)
    policy = loaded.policy
    result: dict[str, Any] = summarize(evaluation_totals(loaded.model, dataset, args.batch_size, device, args.fast,
                                                         policy=policy))
    result["sampled_top1"] = result["top1"]
    if policy == "learned" and loaded.model.config.variant != "cnn":
        sampled = evaluation_totals(loaded.model, dataset, args.batch_size, device, args.fast, policy=policy,
                                    sample=True)
        result["sampled_top1"] = summarize(sampled)["top1"]
    if not args.no_latency:
        result.update(measure_latency(loaded.model, dataset, device, args.fast, min(args.batch_size, 128)))
    result.update(checkpoint=str(args.checkpoint), kind=loaded.kind, variant=loaded.model.config.variant,
                  policy=loaded.policy, dataset=data.name, split=args.split, fast=args.fast, device=str(device))
    if args.json:
        print(json.dumps(result))
        return 0
    name = "F-GDRAM" if args.fast else loaded.model.config.variant
    line = (f"{name} {args.checkpoint} on {data.name} {args.split} (n={result['n']}): top-1 {result['top1']:.4f} "
            f"top-5 {result['top5']:.4f} (sampled path {result['sampled_top1']:.4f}), "
            f"{result['mean_glimpses']:.2f} glimpses/image")
    if result["hit_rate"] is not None:
        line += (f", glimpse hit rate {result['hit_rate']:.3f}, {result['box_distance_px']:.1f} px from the target, "
                 f"{result['border_share']:.3f} on the border")
    if not args.no_latency:
        line += (f", {result['latency_ms_batch1']:.2f} ms/image at batch 1, {result['latency_ms_batched']:.3f} "
                 f"ms/image at batch {result['latency_batch_size']} on {device}")
    print(line)
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from gdram.visualize import draw_frames, save_picture

    if args.n < 1:
        raise _UsageError("--n must be at least 1")
    if Path(args.out).suffix.lower() not in (".png", ".gif"):
        raise _UsageError(f"--out must end in .png or .gif, got {args.out}")
    loaded, data, _ = _load_for_eval(args)
    dataset = _split(data, args.split)
    count = min(args.n, len(dataset))
    picked = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:count]
    images, labels = next(batches(torch.utils.data.Subset(dataset, picked.tolist()), count))
    frames = draw_frames(loaded.model, images.to(next(loaded.model.parameters()).device), labels, args.fast, args.zoom)
    path = save_picture(frames, args.out)
    print(f"wrote {path} ({count} images, {len(frames)} glimpses)")
    return 0


class _UsageError(Exception):
    """A combination of options argparse cannot check (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gdram`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"train": _train, "eval": _eval, "visualize": _visualize}[args.command]
    try:
        return command(args)
    except _UsageError as error:
        parser.error(str(error))
    except (DataError, CheckpointError, TrainingDiverged, ValueError, FileNotFoundError) as error:
        print(f"gdram {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = " (resume with: gdram train --resume --out RUNDIR)" if args.command == "train" else ""
        print(f"gdram {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
