"""gdram-ext: a fused multi-scale retina glimpse operator for recurrent visual attention.

>>> from gdram_ext import retina_glimpse
>>> glimpse = retina_glimpse(images, locations)  # (B, C, H, W), (B, 2) -> (B, 4 * C, 12, 12)
"""

from gdram_ext import reference
from gdram_ext.contract import MODES
from gdram_ext.module import RetinaGlimpse
from gdram_ext.ops import Backend, backend, retina_glimpse

__all__ = ["MODES", "Backend", "RetinaGlimpse", "backend", "reference", "retina_glimpse"]
__version__ = "0.1.0"
