"""The model families one trainer trains: what it needs from GDRAM's and from TNet's.

The trainer (:mod:`gdram.training.trainer`) and the evaluation (:mod:`gdram.training.evaluate`) run one loop for
every family; a :class:`Family` gives them the model and its loss parts:

* :meth:`Family.build`, :meth:`Family.config_from_dict`: the model of a config, and the config a checkpoint stores;
* :meth:`Family.training_loss`: one training step's loss, its named parts (summed per epoch) and its logits;
* :meth:`Family.evaluation`: one evaluation batch's logits, attended glimpses or boxes per image, and the
  attention counts of :data:`gdram.training.attention.GLIMPSE_COUNTS` (glimpses, or chosen cells, on the target);
* :meth:`Family.infer`: the inference forward that latency and FLOPs are measured on.

A checkpoint names its family (``"family"``; one without is GDRAM's, as every checkpoint before TNet).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gdram.models.config import GDRAMConfig
from gdram.models.gdram import GDRAM, check_model_size, create_model
from gdram.models.tnet import TNet, TNetResult, tnet_loss
from gdram.models.tnet_config import TNetConfig
from gdram.training.attention import cell_counts, glimpse_counts, run_policy, salient_locations
from gdram.training.loss import border_loss, guidance_loss, hybrid_loss

ModelConfig = GDRAMConfig | TNetConfig
MAX_TNET_PARAMETERS = 10**9


@dataclass
class StepLoss:
    """One training step: ``total`` (what ``backward`` runs on), the named scalar ``parts`` (``"loss"`` first),
    ``logits`` (B', K) and ``labels`` (B',) they are scored against (B' > B when a family repeats images)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    logits: torch.Tensor
    labels: torch.Tensor


@dataclass
class EvaluationBatch:
    """One evaluation batch: ``logits`` (B, K), ``used`` (B,) glimpses or boxes read per image, ``counts`` (5,)
    the attention sums of :data:`gdram.training.attention.GLIMPSE_COUNTS`, ``levels`` the 0-d sums named by
    :meth:`Family.level_totals` (TNet's hits and cells of each level)."""

    logits: torch.Tensor
    used: torch.Tensor
    counts: torch.Tensor
    levels: dict[str, torch.Tensor] = field(default_factory=dict)


class Family:
    """The interface; :data:`FAMILIES` holds one instance per family, :func:`family_of` finds a config's."""

    name: str
    config_type: type
    loss_names: tuple[str, ...]  # the parts of StepLoss besides "loss", in their order in the epoch records

    def build(self, config: Any) -> nn.Module:
        raise NotImplementedError

    def config_from_dict(self, values: dict[str, Any], train: dict[str, Any] | None) -> Any:
        raise NotImplementedError

    def describe(self, config: Any) -> str:
        """``"gdram (learned policy)"``: the model and its policy, for log lines and messages."""
        return f"{self.summary_fields(config)['variant']} ({config.policy} policy)"

    def summary_fields(self, config: Any) -> dict[str, str]:
        """The summary's ``variant`` and ``policy``."""
        return {"variant": config.variant, "policy": config.policy}

    def input_shape(self, config: Any) -> tuple[int, int, tuple[int, int]]:
        """(classes, channels, (H, W)) of the data the model reads."""
        raise NotImplementedError

    def check_size(self, config: Any, owner: str = "the model") -> None:
        """Refuse a model too large to build (``ValueError`` naming ``owner``)."""
        raise NotImplementedError

    def check_settings(self, config: Any, settings: Any) -> None:
        """Refuse training settings the family cannot use (``ValueError``)."""

    def needs_boxes(self, config: Any) -> bool:
        """Whether the model reads every image's target box (the oracle)."""
        return False

    def has_sampled_path(self, config: Any) -> bool:
        """Whether evaluation also reports the accuracy of sampled (not mean) choices."""
        return False

    def parameter_groups(self, model: nn.Module, config: Any, lr: float) -> list[dict[str, Any]]:
        """Adam's parameter groups."""
        return [{"params": list(model.parameters())}]

    def training_loss(
        self, model: nn.Module, step_model: nn.Module, images, labels, boxes, epoch: int, settings: Any
    ) -> StepLoss:
        raise NotImplementedError

    def evaluation(
        self, model: nn.Module, images: torch.Tensor, boxes: torch.Tensor, fast: bool, sample: bool
    ) -> EvaluationBatch:
        raise NotImplementedError

    def level_totals(self, config: Any) -> tuple[str, ...]:
        """Names of the per-level sums an evaluation batch gives (``EvaluationBatch.levels``): none here."""
        return ()

    def infer(self, model: nn.Module, images: torch.Tensor, fast: bool) -> Any:
        """The inference forward (``fast``: F-GDRAM's early stop, GDRAM only)."""
        return model(images)


class GDRAMFamily(Family):
    """The GDRAM family (gdram, dram, gram, ram, ram-dl and the CNN baseline): the hybrid loss of the paper."""

    name = "gdram"
    config_type = GDRAMConfig
    loss_names = ("classification", "baseline", "reinforce")

    def build(self, config: GDRAMConfig) -> nn.Module:
        return create_model(config)

    def config_from_dict(self, values: dict[str, Any], train: dict[str, Any] | None) -> GDRAMConfig:
        return GDRAMConfig.from_dict(values, train)

    def input_shape(self, config: GDRAMConfig) -> tuple[int, int, tuple[int, int]]:
        return config.num_classes, config.in_channels, tuple(config.image_hw)

    def check_size(self, config: GDRAMConfig, owner: str = "the model") -> None:
        check_model_size(config, owner)

    def needs_boxes(self, config: GDRAMConfig) -> bool:
        return config.policy == "oracle"

    def has_sampled_path(self, config: GDRAMConfig) -> bool:
        return config.policy == "learned"

    def parameter_groups(self, model: nn.Module, config: GDRAMConfig, lr: float) -> list[dict[str, Any]]:
        """What only the policy gradient trains at ``lr * policy_lr_scale``, the rest at ``lr``."""
        modules = model.policy_modules() if isinstance(model, GDRAM) else []
        policy = [parameter for module in modules for parameter in module.parameters()]
        chosen = {id(parameter) for parameter in policy}
        groups = [{"params": [parameter for parameter in model.parameters() if id(parameter) not in chosen]}]
        if policy:
            groups.append({"params": policy, "lr": lr * config.policy_lr_scale})
        return groups

    def training_loss(
        self, model: nn.Module, step_model: nn.Module, images, labels, boxes, epoch: int, settings: Any
    ) -> StepLoss:
        config = model.config
        if config.episodes_per_image > 1:
            images, labels, boxes = (
                value.repeat_interleave(config.episodes_per_image, dim=0) for value in (images, labels, boxes)
            )
        salient = self._salient_warmup(model, epoch)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=settings.amp):
            if salient:
                target, places = self._salient_places(model, images)
                result = step_model(images, locations=places)
            else:
                result = run_policy(step_model, images, boxes)
        parts = hybrid_loss(
            result,
            labels,
            reward=config.reward,
            normalize_advantage=config.normalize_advantage,
            episodes_per_image=config.episodes_per_image,
            reinforce_weight=0.0 if epoch <= config.policy_warmup else 1.0,
        )
        total = parts.total
        if salient:  # pull the policy's first mean glimpse to the salient place
            first = result.mean_locations[0].float()
            total = total + settings.guidance_weight * ((first - target) ** 2).sum(1).mean()
        if settings.location_guidance > 0:
            total = total + settings.guidance_weight * guidance_loss(result, boxes, config.image_hw)
        if config.border_penalty > 0 and isinstance(model, GDRAM):
            total = total + config.border_penalty * border_loss(result, model.location_bound)
        named = {"loss": parts.total, "classification": parts.classification}
        named.update(baseline=parts.baseline, reinforce=parts.reinforce)
        return StepLoss(total, named, result.logits, labels)

    @staticmethod
    def _salient_warmup(model: nn.Module, epoch: int) -> bool:
        """Whether this epoch's glimpses go to the salient place (``warmup_glimpses="salient"``)."""
        config = model.config
        return (
            isinstance(model, GDRAM)
            and config.policy == "learned"
            and config.warmup_glimpses == "salient"
            and epoch <= config.policy_warmup
        )

    @staticmethod
    def _salient_places(model: GDRAM, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2) each image's salient place (clipped) and (T, B, 2) the glimpses there, each jittered by
        N(0, half a glimpse) per axis."""
        config = model.config
        target = model.clip_location(salient_locations(images, 2 * config.glimpse_size))
        height, width = config.image_hw
        spread = images.new_tensor([config.glimpse_size / width, config.glimpse_size / height])
        noise = torch.randn(config.num_glimpses, *target.shape, device=images.device, dtype=images.dtype)
        return target, target + spread * noise

    def evaluation(
        self, model: nn.Module, images: torch.Tensor, boxes: torch.Tensor, fast: bool, sample: bool
    ) -> EvaluationBatch:
        core = model.module if hasattr(model, "module") else model
        result = run_policy(model, images, boxes, fast, sample)
        counts = glimpse_counts(result, boxes, core.config.image_hw, getattr(core, "location_bound", None))
        return EvaluationBatch(result.logits, result.glimpses_used, counts)

    def infer(self, model: nn.Module, images: torch.Tensor, fast: bool) -> Any:
        return model(images, fast=fast)


class TNetFamily(Family):
    """TNet: cross-entropy, per-feature cross-entropy and REINFORCE on the chosen cells (:func:`tnet_loss`)."""

    name = "tnet"
    config_type = TNetConfig
    loss_names = ("classification", "per_feature", "reinforce")

    def build(self, config: TNetConfig) -> nn.Module:
        return TNet(config)

    def config_from_dict(self, values: dict[str, Any], train: dict[str, Any] | None) -> TNetConfig:
        return TNetConfig.from_dict(values)

    def summary_fields(self, config: TNetConfig) -> dict[str, str]:
        return {"variant": "tnet", "policy": config.policy}

    def input_shape(self, config: TNetConfig) -> tuple[int, int, tuple[int, int]]:
        return config.num_classes, config.in_channels, (config.image_size, config.image_size)

    def check_size(self, config: TNetConfig, owner: str = "the model") -> None:
        with torch.device("meta"):
            count = sum(parameter.numel() for parameter in TNet(config).parameters())
        if count > MAX_TNET_PARAMETERS:
            raise ValueError(
                f"{owner} would have {count:,} parameters (at most {MAX_TNET_PARAMETERS:,}) with "
                f"{config.num_classes:,} classes and feature size {config.feature_size}"
            )

    def check_settings(self, config: TNetConfig, settings: Any) -> None:
        if settings.location_guidance > 0:
            raise ValueError("location_guidance trains GDRAM's glimpse policy; TNet has none (leave it at 0)")

    def needs_boxes(self, config: TNetConfig) -> bool:
        return config.policy == "oracle"

    def has_sampled_path(self, config: TNetConfig) -> bool:
        return config.policy == "learned" and config.sampling == "gumbel" and config.levels > 1

    def _boxes(self, config: TNetConfig, boxes: torch.Tensor) -> torch.Tensor | None:
        """What :meth:`TNet.forward` reads of a batch's (B, 4) boxes: all of them for the oracle, else none."""
        return boxes if self.needs_boxes(config) else None

    def training_loss(
        self, model: nn.Module, step_model: nn.Module, images, labels, boxes, epoch: int, settings: Any
    ) -> StepLoss:
        config = model.config
        warmup = config.policy == "learned" and config.levels > 1 and epoch <= config.policy_warmup
        towards = salient_locations(images, config.salient_window, coarse=True) if warmup else None
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=settings.amp):
            result: TNetResult = step_model(images, boxes=self._boxes(config, boxes), towards=towards)
        parts = tnet_loss(result, labels, config, model.reward_baseline, imitate=warmup)
        named = {"loss": parts.total, "classification": parts.classification}
        named.update(per_feature=parts.per_feature, reinforce=parts.reinforce)
        return StepLoss(parts.total, named, result.logits, labels)

    def evaluation(
        self, model: nn.Module, images: torch.Tensor, boxes: torch.Tensor, fast: bool, sample: bool
    ) -> EvaluationBatch:
        config = (model.module if hasattr(model, "module") else model).config
        result: TNetResult = model(images, sample=sample or None, boxes=self._boxes(config, boxes))
        used = torch.full((len(images),), float(result.feature_logits.shape[1]), device=images.device)
        levels, total = {}, torch.zeros(5, dtype=torch.float64)  # total: every level's chosen cells
        for level in range(2, config.levels + 1):
            counts = cell_counts(result, boxes, config.image_size, level)
            levels.update({f"level{level}_hits": counts[0], f"level{level}_cells": counts[2]})
            total += counts
        return EvaluationBatch(result.logits, used, total, levels)

    def level_totals(self, config: TNetConfig) -> tuple[str, ...]:
        """``level<l>_hits`` and ``level<l>_cells`` of every level l after the first: its chosen cells that hold
        the target's centre, and its chosen cells with a known target."""
        return tuple(f"level{level}_{name}" for level in range(2, config.levels + 1) for name in ("hits", "cells"))

    def infer(self, model: nn.Module, images: torch.Tensor, fast: bool) -> Any:
        """The forward; the oracle's cost does not depend on where its box is: the whole image stands in."""
        side = float(model.config.image_size)
        whole = images.new_tensor([0.0, 0.0, side, side]).expand(len(images), 4)
        return model(images, boxes=self._boxes(model.config, whole))


FAMILIES: dict[str, Family] = {family.name: family for family in (GDRAMFamily(), TNetFamily())}


def family_of(config: ModelConfig) -> Family:
    """The family of a model's config."""
    for family in FAMILIES.values():
        if isinstance(config, family.config_type):
            return family
    raise TypeError(f"not a model config: {type(config).__name__} (a GDRAMConfig or a TNetConfig)")


def family_named(name: Any, where: str) -> Family:
    """The family a checkpoint names (``where`` names the checkpoint in the error)."""
    if name not in FAMILIES:
        raise ValueError(f"{where}: unknown model family {name!r} (this version knows {', '.join(FAMILIES)})")
    return FAMILIES[name]


def config_dict(config: ModelConfig) -> dict[str, Any]:
    """A config as the plain dict a checkpoint and ``config.json`` store."""
    return dataclasses.asdict(config)
