"""GDRAM: Gaussian Deep Recurrent Attention Models on the fused retina glimpse.

>>> from gdram import GDRAM, GDRAMConfig, hybrid_loss
>>> model = GDRAM(GDRAMConfig(num_classes=10))  # the paper's model
>>> result = model(images)                       # GlimpseResult; result.logits is (B, 10)
>>> loss = hybrid_loss(result, labels).total
>>> summary = train("cluttered-digits", {"num_glimpses": 6}, {"epochs": 2})  # `gdram train` from Python

The package, by role (each arrow one way): :mod:`gdram.models` and :mod:`gdram.data` <- :mod:`gdram.training`
<- :mod:`gdram.analysis` <- :mod:`gdram.cli` and :mod:`gdram.experiments`; :mod:`gdram.files` (atomic writes)
under all of them.

The names are imported on first use, so that ``import gdram`` (and the ``gdram`` command line,
which answers Ctrl-C while torch loads) starts without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "CNNBaseline": "gdram.models.gdram",
    "GDRAM": "gdram.models.gdram",
    "GDRAMConfig": "gdram.models.config",
    "GlimpseResult": "gdram.models.gdram",
    "LossParts": "gdram.training.loss",
    "POLICIES": "gdram.models.config",
    "RECIPES": "gdram.models.config",
    "TNet": "gdram.models.tnet",
    "TNetConfig": "gdram.models.tnet_config",
    "TrainSettings": "gdram.training.trainer",
    "Trainer": "gdram.training.trainer",
    "VARIANTS": "gdram.models.config",
    "count_parameters": "gdram.models.gdram",
    "create_model": "gdram.models.gdram",
    "from_official": "gdram.models.official",
    "guidance_loss": "gdram.training.loss",
    "hybrid_loss": "gdram.training.loss",
    "resume": "gdram.training.api",
    "tnet_loss": "gdram.models.tnet",
    "to_official": "gdram.models.official",
    "train": "gdram.training.api",
}

__all__ = [
    "CNNBaseline",
    "GDRAM",
    "GDRAMConfig",
    "GlimpseResult",
    "LossParts",
    "POLICIES",
    "RECIPES",
    "TNet",
    "TNetConfig",
    "TrainSettings",
    "Trainer",
    "VARIANTS",
    "count_parameters",
    "create_model",
    "from_official",
    "guidance_loss",
    "hybrid_loss",
    "resume",
    "tnet_loss",
    "to_official",
    "train",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'gdram' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


if TYPE_CHECKING:
    from gdram.models.config import POLICIES, RECIPES, VARIANTS, GDRAMConfig
    from gdram.models.gdram import GDRAM, CNNBaseline, GlimpseResult, count_parameters, create_model
    from gdram.models.official import from_official, to_official
    from gdram.models.tnet import TNet, tnet_loss
    from gdram.models.tnet_config import TNetConfig
    from gdram.training.api import resume, train
    from gdram.training.loss import LossParts, guidance_loss, hybrid_loss
    from gdram.training.trainer import Trainer, TrainSettings
