"""Evaluation of any model family: loading a trained model, accuracy, glimpses used, latency and FLOPs.

:func:`load_model` reads a gdram checkpoint (``best.pt``/``last.pt`` of a run) or one of the
authors' published state dicts (through :func:`gdram.models.official.from_official`), never executing
code from the file. :func:`evaluation_totals`/:func:`summarize` compute top-1/top-5 accuracy and
mean glimpses (shared out over ranks by the trainer); :func:`measure_latency` times inference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode

from gdram.data.datasets import batches
from gdram.models.official import from_official
from gdram.training.attention import GLIMPSE_COUNTS, attention_metrics
from gdram.training.checkpoint import FORMAT, CheckpointError, load_state_file
from gdram.training.families import family_named, family_of
from gdram.training.metrics import Totals

# What an evaluation sums: cross-entropy, top-1 and top-5 hits, glimpses used, images, then the glimpse counts.
EVAL_TOTALS = ("loss", "top1", "top5", "glimpses_used", "count", *GLIMPSE_COUNTS)


@dataclass
class LoadedModel:
    """A model ready for evaluation and where it came from.

    Attributes:
        model: the model, in eval mode, on the requested device.
        kind: ``"gdram"`` (a gdram checkpoint) or ``"official"`` (a published state dict).
        data: the data set description stored with a gdram checkpoint (``{"source": ...}``), or None.
        epoch: epochs it was trained for (gdram checkpoints), or None.
    """

    model: nn.Module
    kind: str
    data: dict[str, Any] | None
    epoch: int | None


def load_model(path: str | Path, device: torch.device | str = "cpu", **official_overrides: Any) -> LoadedModel:
    """Load a gdram checkpoint or a published GDRAM state dict from ``path``.

    Args:
        path: the checkpoint file.
        device: where to put the model.
        official_overrides: :class:`GDRAMConfig` fields for a published state dict (e.g. ``image_size``).

    Raises:
        CheckpointError: the file is missing, truncated, unsafe, or neither kind of checkpoint.
    """
    return model_from_state(load_state_file(path), path, device, **official_overrides)


def model_from_state(
    state: Any, path: str | Path, device: torch.device | str = "cpu", **official_overrides: Any
) -> LoadedModel:
    """:func:`load_model` of a file already read by :func:`gdram.training.checkpoint.load_state_file` (``path``
    names it in errors), so that a caller can build it again, with other overrides, without reading it again."""
    if isinstance(state, dict) and state.get("format") == FORMAT:
        try:
            family = family_named(state.get("family", "gdram"), str(path))
            config = family.config_from_dict(state["config"], state.get("train"))
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{path}: gdram checkpoint whose configuration this version refuses: {error}"
            ) from None
        try:
            family.check_size(config, "its model")
        except ValueError as error:
            raise CheckpointError(f"{path}: refused to build it: {error}") from None
        try:
            model = family.build(config)
            model.load_state_dict(state["model"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path}: gdram checkpoint does not match its configuration: {error}") from None
        return LoadedModel(model.to(device).eval(), "gdram", state.get("data"), state.get("epoch"))
    try:
        model = from_official(state, **official_overrides)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: neither a gdram checkpoint nor a published GDRAM state dict ({error})"
        ) from None
    return LoadedModel(model.to(device).eval(), "official", None, None)


@torch.no_grad()
def evaluation_totals(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    fast: bool = False,
    rank: int = 0,
    world_size: int = 1,
    amp: bool = False,
    num_workers: int = 0,
    sample: bool = False,
) -> Totals:
    """Sums (:data:`EVAL_TOTALS`, then the family's per-level ones) over this rank's share of ``dataset``, under
    the model's location policy (its family's :meth:`~gdram.training.families.Family.evaluation`). Puts ``model``
    in eval mode; ``sample`` draws the moves (or cells) from the policy instead of following its mean (or top k)."""
    model.eval()
    device = torch.device(device)
    core = model.module if hasattr(model, "module") else model
    family = family_of(core.config)
    totals = Totals((*EVAL_TOTALS, *family.level_totals(core.config)))
    for images, labels, boxes in batches(
        dataset, batch_size, rank=rank, world_size=world_size, num_workers=num_workers, boxes=True
    ):
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            result = family.evaluation(model, images, boxes, fast, sample)
        logits = result.logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        totals.add(
            loss=nn.functional.cross_entropy(logits, labels, reduction="sum"),
            top1=(top[:, 0] == labels).sum().to(logits.dtype),
            top5=(top == labels[:, None]).any(1).sum().to(logits.dtype),
            glimpses_used=result.used.sum().to(logits.dtype),
            count=torch.tensor(float(len(labels)), device=device),
        )
        totals.add(**dict(zip(GLIMPSE_COUNTS, result.counts, strict=True)), **result.levels)
    return totals


def summarize(totals: Totals) -> dict[str, Any]:
    """``loss``, ``top1``, ``top5``, ``mean_glimpses``, ``n``, the attention metrics (``hit_rate``,
    ``box_distance_px``, ``border_share``; None when unknown) and ``level_hit_rates`` (TNet's hit rate of each
    level's cells, level 2 first; empty for GDRAM) from :func:`evaluation_totals`' sums."""
    count = max(totals["count"], 1.0)
    levels = [name.removesuffix("_hits") for name in totals.names[len(EVAL_TOTALS) :] if name.endswith("_hits")]
    return {
        "loss": totals["loss"] / count,
        "top1": totals["top1"] / count,
        "top5": totals["top5"] / count,
        "mean_glimpses": totals["glimpses_used"] / count,
        "n": int(totals["count"]),
        **attention_metrics(totals.select(GLIMPSE_COUNTS)),
        "level_hit_rates": [
            totals[f"{level}_hits"] / totals[f"{level}_cells"] if totals[f"{level}_cells"] else None for level in levels
        ],
    }


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    fast: bool = False,
    batch_size: int = 128,
    repeats: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """Inference time per image, in milliseconds: ``latency_ms_batch1`` (one image at a time, median
    of ``repeats``) and ``latency_ms_batched`` (a batch of ``batch_size``, median, divided by its size)."""
    model.eval()
    device = torch.device(device)
    family = family_of(model.config)
    images, _ = next(batches(dataset, batch_size))
    images = images.to(device)

    def median_seconds(inputs: torch.Tensor, count: int) -> float:
        times = []
        for index in range(warmup + count):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            family.infer(model, inputs, fast)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= warmup:
                times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    single = median_seconds(images[:1], repeats)
    batched = median_seconds(images, max(3, repeats // 4))
    return {
        "latency_ms_batch1": single * 1e3,
        "latency_ms_batched": batched * 1e3 / len(images),
        "latency_batch_size": len(images),
    }


@torch.no_grad()
def measure_flops(model: nn.Module, dataset: Dataset, fast: bool = False, count: int = 8) -> float:
    """Floating-point operations per image of the inference forward (mean over the first ``count`` images),
    counted by ``torch.utils.flop_counter.FlopCounterMode`` on the CPU: the convolutions, matrix products
    and their kind; the glimpse operators, which it does not know, count 0 (a resize: a few operations per
    output value, under 1% of any backbone's)."""
    model.eval()
    family = family_of(model.config)
    images, _ = next(batches(dataset, count))
    images = images.to(next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        family.infer(model, images, fast)
    return counter.get_total_flops() / len(images)
