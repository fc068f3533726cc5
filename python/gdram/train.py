"""The REINFORCE trainer: the paper's recipe, checkpoints, resume, DDP, metrics.

:class:`Trainer` orchestrates; the model comes from :func:`gdram.model.create_model` and the loss
from :func:`gdram.loss.hybrid_loss`. Defaults are the paper's: hybrid loss, Adam (lr 1e-3),
``ReduceLROnPlateau`` on validation accuracy (factor 0.5, patience 5), batch 128, T = 8.

Every epoch trains, validates, then (rank 0) writes ``last.pt`` and, when validation accuracy
improves, ``best.pt`` (atomically), and rewrites ``metrics.jsonl``/``metrics.csv`` from the history.
An epoch's randomness (data order, sampled glimpse moves) is seeded by (seed, epoch, rank), so a
run resumed from ``last.pt`` ends exactly like an uninterrupted one on CPU.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in ``DistributedDataParallel``; each
rank trains on its share of every epoch and validation metrics are summed over ranks.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from gdram.attention import run_policy
from gdram.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from gdram.config import GDRAMConfig
from gdram.data import DataSplits, TensorImages, batches, num_batches
from gdram.evaluate import evaluation_totals, summarize
from gdram.loss import border_loss, guidance_loss, hybrid_loss
from gdram.model import GDRAM, create_model
from gdram.plots import plot_learning_curve


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


@dataclass
class TrainSettings:
    """How to train (everything but the model's :class:`GDRAMConfig` and the data).

    Attributes:
        epochs: total number of epochs.
        batch_size: images per step on each process.
        lr: Adam's learning rate.
        lr_factor, lr_patience: ``ReduceLROnPlateau`` on validation accuracy.
        weight_decay: Adam's weight decay.
        grad_clip: clip the gradients' global norm to this, or None.
        seed: seed of the weights, the data order and the sampled moves.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: bf16 autocast in the forward pass.
        compile: ``torch.compile`` the model (CUDA graphs on GPU: ``mode="reduce-overhead"``).
        num_workers: DataLoader workers for data sets read from files.
        eval_batch_size: images per validation/test batch.
        location_guidance: share of the training images whose target box is used (LG-DRAM): for
            them the policy's mean glimpses are also pulled towards the box centre by
            :func:`gdram.loss.guidance_loss`; 0 is pure REINFORCE (the paper).
        guidance_weight: weight of that loss in the total (10: at 1, the REINFORCE term's noise,
            of order 1 / sigma per sample, drowns it; measured on a tiny task in tests/test_learning.py).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_factor: float = 0.5
    lr_patience: int = 5
    weight_decay: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    num_workers: int = 2
    eval_batch_size: int = 256
    location_guidance: float = 0.0
    guidance_weight: float = 10.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "lr_patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "lr_patience" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must lie in (0, 1), got {self.lr_factor!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0 <= self.location_guidance <= 1:
            raise ValueError(f"location_guidance must lie in [0, 1], got {self.location_guidance!r}")
        if not (math.isfinite(self.guidance_weight) and self.guidance_weight >= 0):
            raise ValueError(f"guidance_weight must be a finite number >= 0, got {self.guidance_weight!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        """The settings stored in a checkpoint; the location policy, once stored here, is the model's
        (:meth:`GDRAMConfig.from_dict` reads it)."""
        return cls(**{name: value for name, value in values.items() if name != "policy"})


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torch.distributed`` job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> Distributed:
    """Join the ``torchrun`` job described by the environment (``WORLD_SIZE`` > 1), if any.

    Uses NCCL when the job runs on CUDA, gloo otherwise. Returns rank 0 of 1 outside ``torchrun``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def current_distributed() -> Distributed:
    """The job this process already belongs to (``init_process_group`` called), or rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Distributed()


def resolve_device(name: str, place: Distributed = Distributed()) -> torch.device:
    """``"auto"`` -> CUDA when available (this rank's GPU) else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
        if device.index is None:
            device = torch.device("cuda", place.local_rank % torch.cuda.device_count())
    return device


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of an epoch's sampled moves on one rank (the data order uses ``seed + epoch``, rank-free)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)


class Trainer:
    """Trains a GDRAM-family model on :class:`DataSplits` into a run directory.

    ``Trainer(config, data, settings, run_dir).fit()`` trains ``settings.epochs`` epochs and
    returns the summary (test accuracy of the best checkpoint, timings); ``Trainer.resume(run_dir,
    data)`` continues a stopped run. ``callbacks`` are called as ``callback(trainer, record)`` after
    each epoch's checkpoint is written (raise from one to stop the run).

    Run directory (written by rank 0): ``config.json``, ``last.pt``, ``best.pt``, ``metrics.jsonl``,
    ``metrics.csv``, ``learning_curve.png``, ``summary.json``, and ``tensorboard/`` when TensorBoard
    is installed.
    """

    def __init__(
        self,
        config: GDRAMConfig,
        data: DataSplits,
        settings: TrainSettings | None = None,
        run_dir: str | Path = "runs/gdram",
        data_spec: dict[str, Any] | None = None,
        quiet: bool = False,
        callbacks: Iterable[Callable[[Trainer, dict[str, Any]], None]] = (),
    ) -> None:
        self.settings = settings or TrainSettings()
        self.config, self.data, self.run_dir = config, data, Path(run_dir)
        self.data_spec = data_spec or {"source": data.name}
        self.quiet, self.callbacks = quiet, list(callbacks)
        _check_compatible(config, data)
        self.place = current_distributed()
        self.device = resolve_device(self.settings.device, self.place)
        torch.manual_seed(self.settings.seed)  # identical initial weights on every rank
        self.model = create_model(config).to(self.device)
        self.train_images = self._guided_training_set()
        self.optimizer = torch.optim.Adam(self._parameter_groups(), lr=self.settings.lr,
                                          weight_decay=self.settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=self.settings.lr_factor, patience=self.settings.lr_patience)
        self.epoch = 0
        self.best_accuracy = -1.0
        self.best_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.step_model = self._wrap(self.model)
        self._writer = None

    # ------------------------------------------------------------------------------ construction

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """Adam's groups: what only the policy gradient trains at ``lr * policy_lr_scale``, the rest at ``lr``."""
        policy = [p for module in self.model.policy_modules() for p in module.parameters()] \
            if isinstance(self.model, GDRAM) else []
        chosen = {id(parameter) for parameter in policy}
        rest = [parameter for parameter in self.model.parameters() if id(parameter) not in chosen]
        groups = [{"params": rest}]
        if policy:
            groups.append({"params": policy, "lr": self.settings.lr * self.config.policy_lr_scale})
        return groups

    def _guided_training_set(self):
        """The training split, its boxes kept only where training uses them.

        Location guidance keeps a seeded ``location_guidance`` share of the boxes (the others
        become NaN); the oracle policy keeps them all; otherwise training reads no box.
        """
        settings, train, oracle = self.settings, self.data.train, self.config.policy == "oracle"
        boxes = getattr(train, "stored_boxes", None)
        needs = oracle or settings.location_guidance > 0
        if needs and (boxes is None or not bool(torch.isfinite(boxes).all())):
            what = "the oracle policy" if oracle else "location guidance"
            raise ValueError(f"{what} needs a target box for every training image; {self.data.name} has none "
                             "(box_train in a .npz file, or a generated cluttered set)")
        if oracle or settings.location_guidance == 0:
            return train
        count = round(settings.location_guidance * len(train))
        chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(settings.seed))[:count]
        kept = torch.full_like(boxes, float("nan"))
        kept[chosen] = boxes[chosen]
        return TensorImages(train.images, train.labels, train.image_size, kept)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.place.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        if self.settings.compile:
            model = torch.compile(model, mode="reduce-overhead" if self.device.type == "cuda" else "default")
        return model

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        data: DataSplits,
        epochs: int | None = None,
        quiet: bool = False,
        callbacks: Iterable[Callable[[Trainer, dict[str, Any]], None]] = (),
    ) -> Trainer:
        """Continue the run in ``run_dir`` from its ``last.pt`` (optionally to a new number of ``epochs``)."""
        state = load_checkpoint(Path(run_dir) / "last.pt")
        settings = TrainSettings.from_dict(state["train"])
        if epochs is not None:
            settings = dataclasses.replace(settings, epochs=epochs)
        config = GDRAMConfig.from_dict(state["config"], state["train"])
        trainer = cls(config, data, settings, run_dir, state.get("data"), quiet, callbacks)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.epoch = state["epoch"]
        trainer.best_accuracy, trainer.best_epoch = state["best_accuracy"], state["best_epoch"]
        trainer.history = list(state["metrics"])
        set_rng_state(state["rng"])
        return trainer

    # ------------------------------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain data and tensors (see :mod:`gdram.checkpoint`)."""
        return {
            "model": self.model.state_dict(),
            "config": dataclasses.asdict(self.config),
            "train": dataclasses.asdict(self.settings),
            "data": self.data_spec,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "metrics": self.history,
            "rng": rng_state(),
        }

    # -------------------------------------------------------------------------------- training

    def fit(self) -> dict[str, Any]:
        """Train up to ``settings.epochs``, then evaluate the best checkpoint on the test split.

        Returns the summary (also written to ``summary.json``): ``test_top1``, ``test_top5``,
        ``best_val_top1``, ``best_epoch``, ``epochs``, ``train_seconds``, ``run_dir``.
        """
        if self.place.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.run_dir / "config.json", {"model": dataclasses.asdict(self.config),
                                                       "train": dataclasses.asdict(self.settings),
                                                       "data": self.data_spec})
            self._log(f"{self.data.describe()}; {self.config.variant} ({self.config.policy} policy), "
                      f"{sum(p.numel() for p in self.model.parameters()):,} parameters, on {self.device}"
                      + (f" x {self.place.world_size} processes" if self.place.enabled else ""))
        try:
            while self.epoch < self.settings.epochs:
                record = self.train_epoch()
                for callback in self.callbacks:
                    callback(self, record)
            return self.finish()
        finally:
            if self._writer:
                self._writer.close()

    def train_epoch(self) -> dict[str, Any]:
        """One epoch: train, validate, step the scheduler, checkpoint; returns the epoch's metrics."""
        settings, epoch = self.settings, self.epoch + 1
        torch.manual_seed(epoch_seed(settings.seed, epoch, self.place.rank))
        self.step_model.train()
        totals = torch.zeros(6, dtype=torch.float64)  # loss, classification, baseline, reinforce, correct, count
        start = time.perf_counter()
        pin = self.device.type == "cuda"
        steps = num_batches(self.data.train, settings.batch_size, True, self.place.world_size)
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{settings.epochs}", unit="batch", leave=False,
                   disable=self.quiet or not self.place.is_main or not sys.stderr.isatty(), dynamic_ncols=True)
        config = self.config
        for step, (images, labels, boxes) in enumerate(batches(
                self.train_images, settings.batch_size, shuffle=True, seed=settings.seed + epoch,
                rank=self.place.rank, world_size=self.place.world_size, num_workers=settings.num_workers,
                pin_memory=pin, boxes=True)):
            images = images.to(self.device, non_blocking=pin)
            labels = labels.to(self.device, non_blocking=pin)
            boxes = boxes.to(self.device, non_blocking=pin)
            if config.episodes_per_image > 1:
                images, labels, boxes = (value.repeat_interleave(config.episodes_per_image, dim=0)
                                         for value in (images, labels, boxes))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=settings.amp):
                result = run_policy(self.step_model, images, boxes)
            parts = hybrid_loss(result, labels, reward=config.reward, normalize_advantage=config.normalize_advantage,
                                episodes_per_image=config.episodes_per_image)
            total = parts.total
            if settings.location_guidance > 0:
                total = total + settings.guidance_weight * guidance_loss(result, boxes, config.image_hw)
            if config.border_penalty > 0 and isinstance(self.model, GDRAM):
                total = total + config.border_penalty * border_loss(result, self.model.location_bound)
            self._check_finite(total, epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if settings.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
            self.optimizer.step()
            batch = len(labels)
            correct = (result.logits.detach().argmax(1) == labels).sum()
            values = torch.stack([parts.total.detach() * batch, parts.classification.detach() * batch,
                                  parts.baseline.detach() * batch, parts.reinforce.detach() * batch,
                                  correct.to(parts.total.dtype), torch.tensor(float(batch), device=self.device)])
            totals += values.double().cpu()
            elapsed = time.perf_counter() - start
            bar.update()
            bar.set_postfix(loss=f"{totals[0] / totals[5]:.3f}", acc=f"{totals[4] / totals[5]:.3f}",
                            img_s=f"{totals[5] * self.place.world_size / elapsed:.0f}", refresh=False)
        bar.close()
        totals = self._sum_over_ranks(totals)
        seconds = time.perf_counter() - start
        validation = self.evaluate(self.data.val)
        sampled = self.evaluate(self.data.val, sample=True) if config.policy == "learned" else validation
        self.scheduler.step(validation["top1"])
        self.epoch = epoch
        record = {
            "epoch": epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(totals[0] / totals[5]),
            "train_classification": float(totals[1] / totals[5]),
            "train_baseline": float(totals[2] / totals[5]),
            "train_reinforce": float(totals[3] / totals[5]),
            "train_top1": float(totals[4] / totals[5]),
            "val_loss": validation["loss"],
            "val_top1": validation["top1"],
            "val_top5": validation["top5"],
            "val_sampled_top1": sampled["top1"],
            "val_hit_rate": validation["hit_rate"],
            "val_box_distance_px": validation["box_distance_px"],
            "val_border_share": validation["border_share"],
            "train_seconds": seconds,
            "images_per_second": float(totals[5]) / seconds,
        }
        self.history.append(record)
        improved = validation["top1"] > self.best_accuracy
        if improved:
            self.best_accuracy, self.best_epoch = validation["top1"], epoch
        if self.place.is_main:
            state = self.state()
            save_checkpoint(state, self.run_dir / "last.pt")
            if improved:
                save_checkpoint(state, self.run_dir / "best.pt")
            self._write_metrics(record)
            hits = "" if record["val_hit_rate"] is None else f" hit {record['val_hit_rate']:.2f}"
            self._log(f"epoch {epoch}/{settings.epochs}: loss {record['train_loss']:.4f} "
                      f"train {record['train_top1']:.4f} val {record['val_top1']:.4f}{hits} "
                      f"lr {record['lr']:.2g} {record['images_per_second']:.0f} img/s {seconds:.1f}s"
                      + (" *" if improved else ""))
        return record

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.place.enabled:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
            kept = f"{self.run_dir / 'last.pt'} (epoch {self.epoch})" if self.epoch else "none (first epoch)"
            raise TrainingDiverged(f"the loss became {loss.item()} at epoch {epoch}, step {step + 1}; "
                                   f"stopped. Last good checkpoint: {kept}. Try a lower --lr or --grad-clip.")

    def _sum_over_ranks(self, totals: torch.Tensor) -> torch.Tensor:
        if not self.place.enabled:
            return totals
        reduced = totals.to(self.device)
        dist.all_reduce(reduced)
        return reduced.cpu()

    def evaluate(self, dataset, fast: bool = False, sample: bool = False) -> dict[str, float | None]:
        """:func:`gdram.evaluate.summarize` of ``dataset`` under the run's policy, shared out over the ranks."""
        totals = evaluation_totals(self.model, dataset, self.settings.eval_batch_size, self.device, fast,
                                   self.place.rank, self.place.world_size, self.settings.amp, self.settings.num_workers,
                                   sample)
        return summarize(self._sum_over_ranks(totals))

    def finish(self) -> dict[str, Any]:
        """Evaluate ``best.pt`` on the test split, write ``summary.json``, print the one-line summary."""
        best_path = self.run_dir / "best.pt"
        if self.place.enabled:
            dist.barrier()
        if best_path.is_file():
            self.model.load_state_dict(load_checkpoint(best_path, map_location=self.device)["model"])
        test = self.evaluate(self.data.test)
        sampled = self.evaluate(self.data.test, sample=True) if self.config.policy == "learned" else test
        summary = {
            "dataset": self.data.name,
            "variant": self.config.variant,
            "policy": self.config.policy,
            "test_top1": test["top1"],
            "test_top5": test["top5"],
            "test_n": test["n"],
            "test_sampled_top1": sampled["top1"],
            "test_hit_rate": test["hit_rate"],
            "test_box_distance_px": test["box_distance_px"],
            "test_border_share": test["border_share"],
            "best_val_top1": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "epochs": self.epoch,
            "train_seconds": sum(record["train_seconds"] for record in self.history),
            "run_dir": str(self.run_dir),
        }
        if self.place.is_main:
            _write_json(self.run_dir / "summary.json", summary)
        return summary

    # ----------------------------------------------------------------------------------- output

    def _log(self, message: str) -> None:
        """A progress line on stderr (also with ``quiet``, which only hides the progress bar)."""
        if self.place.is_main:
            tqdm.write(message, file=sys.stderr)

    def _write_metrics(self, record: dict[str, Any]) -> None:
        """Rewrite ``metrics.jsonl``/``metrics.csv`` from the history (so a resumed run has no stale rows)."""
        lines = "".join(json.dumps(item) + "\n" for item in self.history)
        _write_text(self.run_dir / "metrics.jsonl", lines)
        temporary = self.run_dir / ".metrics.csv.tmp"
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(record))
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(temporary, self.run_dir / "metrics.csv")
        plot_learning_curve(self.history, self.run_dir / "learning_curve.png")
        writer = self._tensorboard()
        if writer is not None:
            for key, value in record.items():
                if key != "epoch" and value is not None:
                    writer.add_scalar(key, value, record["epoch"])
            writer.flush()

    def _tensorboard(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                self._writer = False
            else:
                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer or None


def _check_compatible(config: GDRAMConfig, data: DataSplits) -> None:
    expected = (data.num_classes, data.in_channels, tuple(data.image_size))
    actual = (config.num_classes, config.in_channels, tuple(config.image_hw))
    if expected != actual:
        raise ValueError(f"the model expects (classes, channels, image size) {actual} but the data set "
                         f"{data.name} has {expected}")


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _write_json(path: Path, value: Any) -> None:
    _write_text(path, json.dumps(value, indent=2) + "\n")
