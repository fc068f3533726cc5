"""The REINFORCE trainer of every model family: the paper's recipe, checkpoints, resume, DDP, metrics.

:class:`Trainer` orchestrates; the model and its loss parts come from its family
(:mod:`gdram.training.families`: GDRAM's hybrid loss, or TNet's). Defaults are the paper's: Adam (lr 1e-3),
``ReduceLROnPlateau`` on validation accuracy (factor 0.5, patience 5), batch 128.

Every epoch trains, validates, then (rank 0) writes ``last.pt`` and, when validation accuracy
improves, ``best.pt``, and rewrites the metrics files (:class:`gdram.training.runfiles.RunFiles`).
An epoch's randomness (data order, sampled glimpse moves) is seeded by (seed, epoch, rank), so a
run resumed from ``last.pt`` ends exactly like an uninterrupted one on CPU.

Under ``torchrun`` (``WORLD_SIZE`` > 1, :mod:`gdram.training.distributed`) the model is wrapped in
``DistributedDataParallel``; each rank trains on its share of every epoch and validation metrics
are summed over ranks.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from gdram.data.datasets import DataSplits, batches, num_batches
from gdram.models.config import python_scalars
from gdram.training.checkpoint import CheckpointError, load_checkpoint, rng_state, set_rng_state
from gdram.training.distributed import any_over_ranks, barrier, current_distributed, resolve_device
from gdram.training.evaluate import evaluation_totals, summarize
from gdram.training.families import Family, ModelConfig, config_dict, family_named, family_of
from gdram.training.metrics import Totals
from gdram.training.runfiles import RunFiles


def train_totals(family: Family) -> tuple[str, ...]:
    """What a training epoch sums: the loss and each of the family's parts times the batch size, right
    predictions, images."""
    return ("loss", *family.loss_names, "correct", "count")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


@dataclass
class TrainSettings:
    """How to train (everything but the model's config and the data).

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
            :func:`gdram.training.loss.guidance_loss`; 0 is pure REINFORCE (the paper).
        guidance_weight: weight of that loss in the total (10: at 1, the REINFORCE term's noise,
            of order 1 / sigma per sample, drowns it; measured on a tiny task in tests/gdram/test_learning.py).
        init_from: a gdram checkpoint (``best.pt``/``last.pt``) whose model weights start this run
            instead of a fresh initialisation (a curriculum: e.g. small canvases first). The model
            must have the same variant, policy and layer sizes; the image size, data set and
            recipe may differ. Optimiser, epochs and history start afresh.
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
    init_from: str | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, python_scalars(getattr(self, field.name)))
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


# What Trainer.resume reads from last.pt besides the model (load_checkpoint checks model, config and epoch).
RESUME_KEYS = ("train", "optimizer", "scheduler", "best_accuracy", "best_epoch", "metrics", "rng")


def check_resumable(state: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint :meth:`Trainer.resume` cannot continue: one written by another version of gdram
    (state missing, settings this version does not know or refuses) or a model too large to build.

    Raises:
        CheckpointError: naming ``path``, what is wrong and what to do.
    """
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path}: cannot be resumed, it lacks {', '.join(missing)} (written by another version of gdram?); "
            "gdram eval reads it, and --init-from starts a new run from its weights"
        )
    config, train = state["config"], state["train"]
    if not isinstance(config, dict) or not isinstance(train, dict):
        raise CheckpointError(f"{path}: cannot be resumed, its config or train settings are not a mapping")
    try:
        family = family_named(state.get("family", "gdram"), str(path))
    except ValueError as error:
        raise CheckpointError(f"{error}; resume it with the gdram version that wrote it") from None
    unknown = sorted(set(config) - {field.name for field in dataclasses.fields(family.config_type)}) + sorted(
        set(train) - {field.name for field in dataclasses.fields(TrainSettings)} - {"policy"}
    )
    if unknown:
        raise CheckpointError(
            f"{path}: cannot be resumed, it holds settings this version of gdram does not know ({', '.join(unknown)}); "
            "resume it with the gdram version that wrote it, or start a new run with --init-from"
        )
    try:
        model_config = family.config_from_dict(config, train)
        TrainSettings.from_dict(train)
        family.check_size(model_config, str(path))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot be resumed: {error}") from None


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of an epoch's sampled moves on one rank (the data order uses ``seed + epoch``, rank-free)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)


class Trainer:
    """Trains a model of any family (a :class:`GDRAMConfig` or :class:`TNetConfig` says which) on
    :class:`DataSplits` into a run directory.

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
        config: ModelConfig,
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
        self.family = family_of(config)
        _check_compatible(self.family, config, data)
        self.family.check_settings(config, self.settings)
        self.place = current_distributed()
        self.device = resolve_device(self.settings.device, self.place)
        torch.manual_seed(self.settings.seed)  # identical initial weights on every rank
        self.model = self.family.build(config).to(self.device)
        if self.settings.init_from is not None:
            self._start_from(Path(self.settings.init_from))
        self.train_images = self._guided_training_set()
        self.optimizer = torch.optim.Adam(
            self.family.parameter_groups(self.model, config, self.settings.lr),
            lr=self.settings.lr,
            weight_decay=self.settings.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=self.settings.lr_factor, patience=self.settings.lr_patience
        )
        self.epoch = 0
        self.best_accuracy = -1.0
        self.best_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.step_model = self._wrap(self.model)
        self.files = RunFiles(self.run_dir)

    # ------------------------------------------------------------------------------ construction

    def _start_from(self, path: Path) -> None:
        """Load ``settings.init_from``'s model weights; a clear error when they do not fit."""
        state = load_checkpoint(path)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as error:
            first = str(error).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0] if first else ""
            raise ValueError(
                f"init_from {path}: its weights do not fit this model ({self.family.describe(self.config)}): {detail}"
            ) from None

    def _guided_training_set(self):
        """The training split, its boxes kept only where training uses them.

        Location guidance keeps a seeded ``location_guidance`` share of the boxes (the others
        become NaN); the oracle policy keeps them all; otherwise training reads no box.
        """
        settings, train, oracle = self.settings, self.data.train, self.family.needs_boxes(self.config)
        boxes = getattr(train, "stored_boxes", None)
        needs = oracle or settings.location_guidance > 0
        if needs and (boxes is None or not bool(torch.isfinite(boxes).all())):
            what = "the oracle policy" if oracle else "location guidance"
            raise ValueError(
                f"{what} needs a target box for every training image; {self.data.name} has none "
                "(box_train in a .npz file, or a generated cluttered set)"
            )
        if oracle:  # validation and test run the oracle too: check them before epoch 1
            for split in ("val", "test"):
                stored = getattr(getattr(self.data, split), "stored_boxes", None)
                if stored is None or not bool(torch.isfinite(stored).all()):
                    raise ValueError(
                        f"the oracle policy needs a target box for every image; the {split} split of "
                        f"{self.data.name} lacks some (box_{split} in a .npz file, or a generated cluttered set)"
                    )
        if oracle or settings.location_guidance == 0:
            return train
        count = round(settings.location_guidance * len(train))
        chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(settings.seed))[:count]
        kept = torch.full_like(boxes, float("nan"))
        kept[chosen] = boxes[chosen]
        return train.with_boxes(kept)

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
        """Continue the run in ``run_dir`` from its ``last.pt`` (optionally to a new number of ``epochs``).

        A ``best.pt`` of a later epoch than ``last.pt`` (the run stopped between the two writes of an
        epoch) is adopted as the best so far, so that the run's best is always the one ``best.pt`` holds.

        Raises:
            CheckpointError: ``last.pt`` cannot be resumed (:func:`check_resumable`), or its state does
                not fit the model and optimiser it describes.
        """
        path = Path(run_dir) / "last.pt"
        state = load_checkpoint(path)
        check_resumable(state, path)
        settings = TrainSettings.from_dict(state["train"])
        if epochs is not None:
            settings = dataclasses.replace(settings, epochs=epochs)
        config = family_named(state.get("family", "gdram"), str(path)).config_from_dict(state["config"], state["train"])
        fresh = dataclasses.replace(settings, init_from=None)  # last.pt holds the weights: init_from is history
        trainer = cls(config, data, fresh, run_dir, state.get("data"), quiet, callbacks)
        trainer.settings = settings
        try:
            trainer.model.load_state_dict(state["model"])
            trainer.optimizer.load_state_dict(state["optimizer"])
            trainer.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            detail = " ".join(str(error).split())[:300]
            raise CheckpointError(
                f"{path}: cannot be resumed, its state does not fit the model it describes ({detail})"
            ) from None
        trainer.epoch = state["epoch"]
        trainer.best_accuracy, trainer.best_epoch = state["best_accuracy"], state["best_epoch"]
        trainer.history = list(state["metrics"])
        trainer._adopt_later_best()
        return trainer

    def _adopt_later_best(self) -> None:
        """Take ``best.pt``'s best accuracy and epoch when it is ahead of ``last.pt`` (see :meth:`resume`)."""
        best_path = self.run_dir / "best.pt"
        if not best_path.is_file():
            return
        best = load_checkpoint(best_path)
        if best["epoch"] > self.epoch and best.get("best_epoch") == best["epoch"] and "best_accuracy" in best:
            self.best_accuracy, self.best_epoch = best["best_accuracy"], best["best_epoch"]

    # ------------------------------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain data and tensors (see :mod:`gdram.training.checkpoint`)."""
        return {
            "family": self.family.name,
            "model": self.model.state_dict(),
            "config": config_dict(self.config),
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
        try:  # the run directory's lock is given up however the run ends
            if self.place.is_main:
                self.files.start(
                    {
                        "family": self.family.name,
                        "model": config_dict(self.config),
                        "train": dataclasses.asdict(self.settings),
                        "data": self.data_spec,
                    }
                )
                self._log(
                    f"{self.data.describe()}; {self.family.describe(self.config)}, "
                    f"{sum(p.numel() for p in self.model.parameters()):,} parameters, on {self.device}"
                    + (f" x {self.place.world_size} processes" if self.place.enabled else "")
                )
            while self.epoch < self.settings.epochs:
                record = self.train_epoch()
                for callback in self.callbacks:
                    callback(self, record)
            return self.finish()
        finally:
            self.files.close()

    def train_epoch(self) -> dict[str, Any]:
        """One epoch: train, validate, step the scheduler, checkpoint; returns the epoch's metrics."""
        settings, epoch = self.settings, self.epoch + 1
        torch.manual_seed(epoch_seed(settings.seed, epoch, self.place.rank))
        self.step_model.train()
        totals = Totals(train_totals(self.family))
        start = time.perf_counter()
        pin = self.device.type == "cuda"
        steps = num_batches(self.data.train, settings.batch_size, True, self.place.world_size)
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch}/{settings.epochs}",
            unit="batch",
            leave=False,
            disable=self.quiet or not self.place.is_main or not sys.stderr.isatty(),
            dynamic_ncols=True,
        )
        config = self.config
        for step, (images, labels, boxes) in enumerate(
            batches(
                self.train_images,
                settings.batch_size,
                shuffle=True,
                seed=settings.seed + epoch,
                rank=self.place.rank,
                world_size=self.place.world_size,
                num_workers=settings.num_workers,
                pin_memory=pin,
                boxes=True,
            )
        ):
            images = images.to(self.device, non_blocking=pin)
            labels = labels.to(self.device, non_blocking=pin)
            boxes = boxes.to(self.device, non_blocking=pin)
            step_loss = self.family.training_loss(self.model, self.step_model, images, labels, boxes, epoch, settings)
            total = step_loss.total
            self._check_finite(total, epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if settings.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
            self.optimizer.step()
            batch = len(step_loss.labels)
            correct = (step_loss.logits.detach().argmax(1) == step_loss.labels).sum()
            totals.add(
                **{name: part.detach() * batch for name, part in step_loss.parts.items()},
                correct=correct.to(step_loss.parts["loss"].dtype),
                count=torch.tensor(float(batch), device=self.device),
            )
            elapsed = time.perf_counter() - start
            bar.update()
            bar.set_postfix(
                loss=f"{totals['loss'] / totals['count']:.3f}",
                acc=f"{totals['correct'] / totals['count']:.3f}",
                img_s=f"{totals['count'] * self.place.world_size / elapsed:.0f}",
                refresh=False,
            )
        bar.close()
        totals = totals.over_ranks(self.place, self.device)
        seconds = time.perf_counter() - start
        validation = self.evaluate(self.data.val)
        sampled = self.evaluate(self.data.val, sample=True) if self.family.has_sampled_path(config) else validation
        self.scheduler.step(validation["top1"])
        self.epoch = epoch
        record = {
            "epoch": epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": totals["loss"] / totals["count"],
            **{f"train_{name}": totals[name] / totals["count"] for name in self.family.loss_names},
            "train_top1": totals["correct"] / totals["count"],
            "val_loss": validation["loss"],
            "val_top1": validation["top1"],
            "val_top5": validation["top5"],
            "val_sampled_top1": sampled["top1"],
            "val_hit_rate": validation["hit_rate"],
            "val_box_distance_px": validation["box_distance_px"],
            "val_border_share": validation["border_share"],
            "train_seconds": seconds,
            "images_per_second": totals["count"] / seconds,
        }
        self.history.append(record)
        improved = validation["top1"] > self.best_accuracy
        if improved:
            self.best_accuracy, self.best_epoch = validation["top1"], epoch
        if self.place.is_main:
            self.files.checkpoint(self.state(), best=improved)
            self.files.metrics(self.history)
            hits = "" if record["val_hit_rate"] is None else f" hit {record['val_hit_rate']:.2f}"
            self._log(
                f"epoch {epoch}/{settings.epochs}: loss {record['train_loss']:.4f} "
                f"train {record['train_top1']:.4f} val {record['val_top1']:.4f}{hits} "
                f"lr {record['lr']:.2g} {record['images_per_second']:.0f} img/s {seconds:.1f}s"
                + (" *" if improved else "")
            )
        return record

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        if any_over_ranks(~torch.isfinite(loss.detach()), self.place):
            kept = f"{self.run_dir / 'last.pt'} (epoch {self.epoch})" if self.epoch else "none (first epoch)"
            raise TrainingDiverged(
                f"the loss became {loss.item()} at epoch {epoch}, step {step + 1}; "
                f"stopped. Last good checkpoint: {kept}. Try a lower --lr or --grad-clip."
            )

    def evaluate(self, dataset, fast: bool = False, sample: bool = False) -> dict[str, float | None]:
        """:func:`~gdram.training.evaluate.summarize` of ``dataset`` under the run's policy, over the ranks."""
        totals = evaluation_totals(
            self.model,
            dataset,
            self.settings.eval_batch_size,
            self.device,
            fast,
            self.place.rank,
            self.place.world_size,
            self.settings.amp,
            self.settings.num_workers,
            sample,
        )
        return summarize(totals.over_ranks(self.place, self.device))

    def finish(self) -> dict[str, Any]:
        """Evaluate ``best.pt`` on the test split, write ``summary.json``, print the one-line summary."""
        best_path = self.run_dir / "best.pt"
        barrier(self.place)
        if best_path.is_file():
            self.model.load_state_dict(load_checkpoint(best_path, map_location=self.device)["model"])
        test = self.evaluate(self.data.test)
        sampled = self.evaluate(self.data.test, sample=True) if self.family.has_sampled_path(self.config) else test
        summary = {
            "dataset": self.data.name,
            **self.family.summary_fields(self.config),
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
            self.files.summary(summary)
        return summary

    # ----------------------------------------------------------------------------------- output

    def _log(self, message: str) -> None:
        """A progress line on stderr (also with ``quiet``, which only hides the progress bar)."""
        if self.place.is_main:
            tqdm.write(message, file=sys.stderr)


def _check_compatible(family: Family, config: ModelConfig, data: DataSplits) -> None:
    expected = (data.num_classes, data.in_channels, tuple(data.image_size))
    actual = family.input_shape(config)
    if expected != actual:
        raise ValueError(
            f"the model expects (classes, channels, image size) {actual} but the data set {data.name} has {expected}"
        )
