"""The ``gdram`` command line: ``train``, ``eval`` and ``visualize`` (also ``python -m gdram``).

``train`` maps its flags onto the Python training API (:mod:`gdram.training.api`), which checks them, owns the
run directory, reads the data and trains; this module turns the API's errors into one line (naming the flag)
and its summary into the result line. ``eval`` and ``visualize`` read a checkpoint and its data.

Exit codes: 0 success, 2 usage error, 1 bad input or a failed run (one line on stderr, no
traceback; an unexpected internal error also says where its full traceback was written, or shows
it with ``--debug``), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gdram.cli.options import error_line, write_traceback
from gdram.cli.parser import build_parser, config_fields, flag, misplaced_flags, train_settings
from gdram.cli.signals import StopSignals, Terminated, stopped_line
from gdram.data.classes import check_model_classes
from gdram.data.datasets import DataSplits, batches
from gdram.data.provenance import verify
from gdram.files import check_writable_place
from gdram.models.config import GDRAMConfig
from gdram.models.tnet_config import TNetConfig
from gdram.training.api import (
    USER_ERRORS,
    VAL_FRACTION,
    ChangedSettings,
    IgnoredSettings,
    SettingError,
    read_spec,
    resumed_run,
    training_run,
)
from gdram.training.checkpoint import load_state_file
from gdram.training.distributed import current_distributed, resolve_device
from gdram.training.evaluate import evaluation_totals, measure_flops, measure_latency, model_from_state, summarize
from gdram.training.families import family_of


def _train(args: argparse.Namespace) -> int:
    """Train a new run, or continue one (``--resume``), through :mod:`gdram.training.api`; print the result line."""
    options = {
        "root": args.data_root,
        "download": args.download,
        "image_size": args.image_size,
        "val_fraction": args.val_fraction,
        "quiet": args.quiet,
        "warn": lambda warning: print(f"gdram train: warning: {warning}", file=sys.stderr),
        "on_run_dir": lambda run_dir: setattr(args, "run_dir", run_dir),
    }
    misplaced = misplaced_flags(args)
    if misplaced:
        other = "GDRAM's (--model gdram)" if args.model == "tnet" else "TNet's (--model tnet)"
        raise _UsageError(f"{', '.join(misplaced)}: {other} flags, not --model {args.model or 'gdram'}'s")
    fields, settings = config_fields(args), train_settings(args)
    try:
        if args.resume:
            if args.out is None:
                raise _UsageError("--resume needs --out RUNDIR, the run to continue")
            settings.pop("epochs", None)
            source = args.data or args.dataset
            run = resumed_run(
                args.out, source, epochs=args.epochs, model=args.model, config=fields, settings=settings, **options
            )
        else:
            source = args.data or args.dataset or "cluttered-digits"
            run = training_run(source, fields, settings, args.out, model=args.model or "gdram", **options)
        with run as trainer:
            main_process = current_distributed().is_main
            if main_process:
                print(f"gdram train: run directory {trainer.run_dir}", file=sys.stderr)
            summary = trainer.fit()
    except SettingError as error:
        raise _UsageError(_refusal(error, args)) from None
    if main_process:
        policy = "" if summary["variant"] == "cnn" else f" ({summary['policy']} policy)"
        attended = "cell" if summary["variant"] == "tnet" else "glimpse"
        print(
            f"{summary['variant']}{policy} on {summary['dataset']}: test top-1 "
            f"{summary['test_top1']:.4f} top-5 {summary['test_top5']:.4f} (n={summary['test_n']})"
            + ("" if summary["test_hit_rate"] is None else f", {attended} hit rate {summary['test_hit_rate']:.3f}")
            + f", best val {summary['best_val_top1']:.4f} at epoch {summary['best_epoch']}/{summary['epochs']}, "
            f"{summary['train_seconds']:.0f}s training; run {summary['run_dir']}"
        )
    return 0


def _refusal(error: SettingError, args: argparse.Namespace) -> str:
    """The usage error of refused settings, in the flags that asked for them."""
    if isinstance(error, IgnoredSettings):
        return f"{', '.join(map(flag, error.names))}: the CNN baseline (--variant cnn) has no glimpses"
    if isinstance(error, ChangedSettings):
        refused = [f"{flag(name)} {asked} (the run has {kept})" for name, asked, kept in error.changes]
        if error.trained is not None:
            refused.append(f"--epochs {args.epochs} (the total; the run has already trained {error.trained})")
        return (
            f"--resume continues a run with its saved settings, refusing {'; '.join(refused)}; only "
            "--epochs and --quiet change a resumed run (start a new run to change the others)"
        )
    if len(error.names) == 1 and error.names[0] != "out":
        return f"argument {flag(error.names[0])}: {error}"
    return str(error)


def _data_spec(args: argparse.Namespace, fallback: dict[str, Any] | None) -> dict[str, Any]:
    """The data description of ``eval``/``visualize``: the data flags given, over the checkpoint's (``fallback``)."""
    spec = (
        dict(fallback)
        if fallback is not None
        else {"source": "cluttered-digits", "root": None, "image_size": None, "val_fraction": VAL_FRACTION}
    )
    source = args.data or args.dataset
    if source is not None:
        spec = {key: value for key, value in spec.items() if key not in ("fingerprint", "generator", "in_memory")}
        spec["source"] = source
    if args.data_root is not None:
        spec["root"] = args.data_root
    if args.image_size is not None:
        spec["image_size"] = list(args.image_size)
    if args.val_fraction is not None:
        spec["val_fraction"] = args.val_fraction
    return spec


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
    data = read_spec(_data_spec(args, loaded.data), args.download)
    if loaded.kind == "official":  # the published files do not say their image size: the data's
        loaded = model_from_state(state, args.checkpoint, device, image_size=data.image_size)
    config = loaded.model.config
    _, channels, (height, width) = family_of(config).input_shape(config)
    if (channels, height, width) != (data.in_channels, *data.image_size):
        raise ValueError(
            f"{args.checkpoint} expects {channels}x{height}x{width} "
            f"images but {data.name} has {data.in_channels}x{data.image_size[0]}x{data.image_size[1]}"
        )
    check_model_classes(config.num_classes, data, args.checkpoint)
    if args.fast and getattr(config, "variant", "tnet") in ("cnn", "tnet"):
        what = "the CNN baseline (no glimpses)" if isinstance(config, GDRAMConfig) else "a TNet (no glimpses)"
        raise ValueError(f"--fast stops glimpsing early, but {args.checkpoint} is {what}")
    return loaded, data, device


def _json_value(value: Any) -> Any:
    """``value``, or None for a NaN or infinite float (JSON has no such numbers)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _eval(args: argparse.Namespace) -> int:
    loaded, data, device = _load_for_eval(args)
    dataset = _split(data, args.split)
    config = loaded.model.config
    family = family_of(config)
    result: dict[str, Any] = summarize(evaluation_totals(loaded.model, dataset, args.batch_size, device, args.fast))
    result["sampled_top1"] = result["top1"]
    if family.has_sampled_path(config) and getattr(config, "variant", None) != "cnn":
        sampled = evaluation_totals(loaded.model, dataset, args.batch_size, device, args.fast, sample=True)
        result["sampled_top1"] = summarize(sampled)["top1"]
    result["flops_per_image"] = measure_flops(loaded.model, dataset, args.fast)
    if isinstance(config, TNetConfig):
        result["boxes_per_level"] = list(config.boxes_per_level)
    if not args.no_latency:
        result.update(measure_latency(loaded.model, dataset, device, args.fast, min(args.batch_size, 128)))
    variant, policy = family.summary_fields(config)["variant"], config.policy
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
        + (
            f"{result['mean_glimpses']:.2f} glimpses/image"
            if family.name == "gdram"
            else f"boxes read per level {'+'.join(map(str, result['boxes_per_level']))}"
        )
        + f", {result['flops_per_image'] / 1e6:.1f} MFLOPs/image"
    )
    if result["hit_rate"] is not None and family.name == "gdram":
        line += (
            f", glimpse hit rate {result['hit_rate']:.3f}, {result['box_distance_px']:.1f} px from the target, "
            f"{result['border_share']:.3f} on the border"
        )
    elif result["hit_rate"] is not None:
        line += f", cell hit rate {result['hit_rate']:.3f}"
        if None not in result["level_hit_rates"]:
            levels = "/".join(str(level) for level in range(2, len(result["level_hit_rates"]) + 2))
            line += f" (levels {levels}: {' / '.join(f'{rate:.3f}' for rate in result['level_hit_rates'])})"
        line += f", {result['box_distance_px']:.1f} px from the target"
    if not args.no_latency:
        line += (
            f", {result['latency_ms_batch1']:.2f} ms/image at batch 1, {result['latency_ms_batched']:.3f} "
            f"ms/image at batch {result['latency_batch_size']} on {device}"
        )
    print(line)
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from gdram.analysis.cells import draw_cell_frames
    from gdram.analysis.visualize import draw_frames, draw_grid, save_picture

    out = Path(args.out)
    if out.is_dir():
        raise _UsageError(f"--out {out} is a directory; give a FILE.png or FILE.gif")
    if out.suffix.lower() not in (".png", ".gif"):
        raise _UsageError(f"--out must end in .png or .gif, got {args.out}")
    check_writable_place(out.parent, f"--out {out}")
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
    if isinstance(loaded.model.config, TNetConfig):
        frames = draw_cell_frames(loaded.model, images, labels, args.zoom)
        frames = frames if out.suffix.lower() == ".gif" else frames[-1:]
    elif out.suffix.lower() == ".gif":
        frames = draw_frames(loaded.model, images, labels, args.fast, args.zoom)
    else:
        frames = [draw_grid(loaded.model, images, labels, args.fast, args.zoom)]
    path = save_picture(frames, out)
    print(f"wrote {path} ({count} images" + (f", {len(frames)} frames)" if len(frames) > 1 else ")"))
    return 0


class _UsageError(Exception):
    """A combination of options argparse cannot check (exit code 2)."""


def _out_of_memory(error: Exception) -> bool:
    """Whether ``error`` is an allocation failure: Python's, CUDA's, or the CPU allocator's ``RuntimeError``."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def _failure_line(args: argparse.Namespace, error: Exception) -> str:
    """One line for an error: the message of a user error, or the exception and where its traceback is."""
    if _out_of_memory(error):
        return f"gdram {args.command}: error: out of memory ({error_line(error)[:200]}); lower --batch-size"
    if isinstance(error, OSError) and error.filename is None and args.run_dir is not None:
        return f"gdram {args.command}: error: {error_line(error)} (run directory {args.run_dir})"
    if isinstance(error, USER_ERRORS):
        return f"gdram {args.command}: error: {error_line(error)}"
    where = write_traceback(error, args.run_dir)
    kept = f"full traceback in {where}" if where else "rerun with --debug for the full traceback"
    return f"gdram {args.command}: internal error: {type(error).__name__}: {error_line(error)} ({kept})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gdram`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.run_dir = None  # the run directory, once known: for the interrupt hint and the traceback file
    command = {"train": _train, "eval": _eval, "visualize": _visualize}[args.command]
    with StopSignals(lambda terminated: stopped_line(args.command, args.run_dir, terminated)) as stop:
        try:
            return command(args)
        except _UsageError as error:
            args.usage_error(str(error))
        except KeyboardInterrupt as error:
            terminated = stop.terminated or isinstance(error, Terminated)
            print(stopped_line(args.command, args.run_dir, terminated), file=sys.stderr)
            return 143 if terminated else 130
        except Exception as error:
            if stop.signum is not None:  # an error the stop caused (a DataLoader worker it killed)
                print(stopped_line(args.command, args.run_dir, stop.terminated), file=sys.stderr)
                return 143 if stop.terminated else 130
            if args.debug:
                raise
            print(_failure_line(args, error), file=sys.stderr)
            return 1
