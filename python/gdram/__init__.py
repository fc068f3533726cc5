"""GDRAM: Gaussian Deep Recurrent Attention Models on the fused retina glimpse.

>>> from gdram import GDRAM, GDRAMConfig, hybrid_loss
>>> model = GDRAM(GDRAMConfig(num_classes=10))  # the paper's model
>>> result = model(images)                       # GlimpseResult; result.logits is (B, 10)
>>> loss = hybrid_loss(result, labels).total
"""

from gdram.config import VARIANTS, GDRAMConfig
from gdram.loss import LossParts, hybrid_loss
from gdram.model import GDRAM, CNNBaseline, GlimpseResult, count_parameters, create_model
from gdram.official import from_official, to_official

__all__ = [
    "CNNBaseline",
    "GDRAM",
    "GDRAMConfig",
    "GlimpseResult",
    "LossParts",
    "VARIANTS",
    "count_parameters",
    "create_model",
    "from_official",
    "hybrid_loss",
    "to_official",
]
