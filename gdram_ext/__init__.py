"""gdram-ext: fused glimpse operators for recurrent visual attention.

>>> from gdram_ext import retina_glimpse, box_glimpse
>>> glimpse = retina_glimpse(images, locations)  # (B, C, H, W), (B, 2) -> (B, 4 * C, 12, 12)
>>> crops = box_glimpse(images, centres, sides, 64)  # (B, C, H, W), (B, K, 2), (B, K) -> (B, K, C, 64, 64)
"""

from gdram_ext import reference
from gdram_ext.contract import MODES
from gdram_ext.module import RetinaGlimpse
from gdram_ext.ops import Backend, backend, box_glimpse, retina_glimpse

__all__ = ["MODES", "Backend", "RetinaGlimpse", "backend", "box_glimpse", "reference", "retina_glimpse"]
__version__ = "0.1.0"
