"""GDRAM: Gaussian Deep Recurrent Attention Models on the fused retina glimpse.

>>> from gdram import GDRAM, GDRAMConfig, hybrid_loss
>>> model = GDRAM(GDRAMConfig(num_classes=10))  # the paper's model
>>> result = model(images)                       # GlimpseResult; result.logits is (B, 10)
>>> loss = hybrid_loss(result, labels).total

The names are imported on first use, so that ``import gdram`` (and the ``gdram`` command line,
which answers Ctrl-C while torch loads) starts without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "CNNBaseline": "gdram.model",
    "GDRAM": "gdram.model",
    "GDRAMConfig": "gdram.config",
    "GlimpseResult": "gdram.model",
    "LossParts": "gdram.loss",
    "POLICIES": "gdram.config",
    "RECIPES": "gdram.config",
    "TNet": "gdram.tnet",
    "TNetConfig": "gdram.tnet_config",
    "VARIANTS": "gdram.config",
    "count_parameters": "gdram.model",
    "create_model": "gdram.model",
    "from_official": "gdram.official",
    "guidance_loss": "gdram.loss",
    "hybrid_loss": "gdram.loss",
    "tnet_loss": "gdram.tnet",
    "to_official": "gdram.official",
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
    "VARIANTS",
    "count_parameters",
    "create_model",
    "from_official",
    "guidance_loss",
    "hybrid_loss",
    "tnet_loss",
    "to_official",
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
    from gdram.config import POLICIES, RECIPES, VARIANTS, GDRAMConfig
    from gdram.loss import LossParts, guidance_loss, hybrid_loss
    from gdram.model import GDRAM, CNNBaseline, GlimpseResult, count_parameters, create_model
    from gdram.official import from_official, to_official
    from gdram.tnet import TNet, tnet_loss
    from gdram.tnet_config import TNetConfig
