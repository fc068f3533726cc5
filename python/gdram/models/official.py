"""Load the authors' published GDRAM checkpoints (``mnist_gdram.pth``, ``cifar10_gdram.pth``, ...).

The published state dict maps one to one onto :class:`gdram.GDRAM` with ``variant="gdram"``,
``official_footprint=True`` (the first scale spans g * H / (H - 1) pixels, as their affine
glimpse of scale g / (H - 1) does) and ``context_mode="nearest"`` (their ``F.interpolate``).
The number of classes, channels, scales and layer widths are read from the tensors' shapes.

A loaded model gives the published implementation's evaluation outputs (logits, locations,
weights, baselines). Where this package deliberately differs from that code:

* F-GDRAM (``fast=True``) stops each sample on its own; the published code decides for the whole
  batch from sample 0, reading weight columns -1 and -2, which are still unwritten at that point;
* evaluation-mode ``log_probs`` hold the log-density of the move taken (mu), not ones;
* no move is emitted after the last glimpse (the published code emits one and discards it, which
  only adds one update of the emission BatchNorm's running statistics per training batch).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from gdram.models.config import GDRAMConfig
from gdram.models.gdram import GDRAM

# (published prefix, this package's prefix); each key maps by its prefix, the suffix is kept.
KEY_PREFIXES = (
    ("glimpse_net.fc_g.", "glimpse.image_cnn."),
    ("glimpse_net.fc_gg.", "glimpse.image_fc."),
    ("glimpse_net.fc_l.0.", "glimpse.location_mlp.0."),
    ("glimpse_net.fc_lg.", "glimpse.location_mlp.2."),
    ("rnn1.lstm_cell.", "lower_core.cell."),
    ("rnn2.lstm_cell.", "upper_core.cell."),
    ("rnn2.context_net1.0.", "context.features.0."),
    ("rnn2.context_net2.0.", "context.features.3."),
    ("rnn2.fc.", "context.fc."),
    ("class_net.fc.", "prediction.mlp."),
    ("emission_net.fc.", "emission.hidden."),
    ("emission_net.mu_net.0.", "emission.mu."),
    ("emission_net.logvar_net.0.", "emission.log_var."),
    ("baseline_net.fc.", "baseline.mlp."),
)


def _rename(key: str, source: int) -> str | None:
    """``key`` with its prefix swapped (source 0: published -> ours, 1: ours -> published), or None."""
    for pair in KEY_PREFIXES:
        if key.startswith(pair[source]):
            return pair[1 - source] + key[len(pair[source]) :]
    return None


def load_official_state_dict(state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike) -> dict:
    """The published state dict, read from a path (``torch.load(weights_only=True)``) or given.

    A ``module.`` prefix (``nn.DataParallel``) is removed.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        state_dict = torch.load(state_dict_or_path, map_location="cpu", weights_only=True)
    else:
        state_dict = state_dict_or_path
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors), got {type(state_dict).__name__}")
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def official_config(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> GDRAMConfig:
    """The :class:`GDRAMConfig` of a published state dict, read from its shapes, then ``overrides``."""
    needed = (
        "glimpse_net.fc_g.0.weight",
        "glimpse_net.fc_g.4.weight",
        "glimpse_net.fc_gg.weight",
        "rnn1.lstm_cell.weight_hh",
        "rnn2.context_net1.0.weight",
        "class_net.fc.0.weight",
        "class_net.fc.2.weight",
    )
    absent = [key for key in needed if key not in state_dict]
    if absent:
        raise KeyError(f"not a published GDRAM state dict: missing {absent}")
    first_conv = state_dict["glimpse_net.fc_g.0.weight"]
    second_channels = state_dict["glimpse_net.fc_g.4.weight"].shape[0]
    in_channels = state_dict["rnn2.context_net1.0.weight"].shape[1]
    pooled = math.isqrt(state_dict["glimpse_net.fc_gg.weight"].shape[1] // second_channels)
    inferred = {
        "num_classes": state_dict["class_net.fc.2.weight"].shape[0],
        "in_channels": in_channels,
        "num_scales": first_conv.shape[1] // in_channels,
        "glimpse_size": 4 * pooled,
        "hidden_size": state_dict["rnn1.lstm_cell.weight_hh"].shape[1],
        "glimpse_channels": (first_conv.shape[0], second_channels),
        "context_channels": state_dict["rnn2.context_net1.0.weight"].shape[0],
        "mlp_hidden_size": state_dict["class_net.fc.0.weight"].shape[0],
        "variant": "gdram",
        "official_footprint": True,
        "recipe": "paper",
    }
    return GDRAMConfig(**{**inferred, **overrides})


def from_official(state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike, **config_overrides: Any) -> GDRAM:
    """A :class:`GDRAM` in evaluation mode holding the published weights.

    Args:
        state_dict_or_path: the published state dict, or the path of its ``.pth`` file.
        config_overrides: :class:`GDRAMConfig` fields to set (e.g. ``image_size``, ``num_glimpses``);
            the rest is read from the shapes (glimpse size 12 for a 3x3-pooled glimpse CNN).

    Raises:
        KeyError: naming the missing and unexpected published keys.
        ValueError: naming the tensors whose shapes do not match the configuration.
    """
    official = load_official_state_dict(state_dict_or_path)
    model = GDRAM(official_config(official, **config_overrides))
    expected = model.state_dict()
    renamed = {}
    unexpected = []
    for key, value in official.items():
        ours = _rename(key, 0)
        if ours is None or ours not in expected:
            unexpected.append(key)
        else:
            renamed[ours] = value
    missing = [_rename(key, 1) or key for key in expected if key not in renamed]
    if missing or unexpected:
        raise KeyError(f"published GDRAM state dict does not match: missing {missing}, unexpected {unexpected}")
    mismatched = [
        f"{_rename(key, 1)}: {tuple(value.shape)} (expected {tuple(expected[key].shape)})"
        for key, value in renamed.items()
        if value.shape != expected[key].shape
    ]
    if mismatched:
        raise ValueError(f"published GDRAM tensors with unexpected shapes: {mismatched}")
    model.load_state_dict(renamed, strict=True)
    return model.eval()


def to_official(model: GDRAM) -> OrderedDict[str, torch.Tensor]:
    """The state dict of a ``variant="gdram"`` model with BatchNorm in its emission network (the
    paper's recipe) under the published key names."""
    if not isinstance(model, GDRAM) or model.config.variant != "gdram":
        raise ValueError("to_official needs a GDRAM with variant='gdram' (the published architecture)")
    if not model.config.emission_batch_norm:
        raise ValueError(
            "to_official needs emission_batch_norm=True (recipe='paper'): the published emission network has BatchNorm"
        )
    return OrderedDict((_rename(key, 1), value) for key, value in model.state_dict().items())
