"""``RetinaGlimpse``: the retina glimpse as an ``nn.Module`` holding its hyper-parameters."""

from __future__ import annotations

import torch
from torch import nn

from gdram_ext.ops import retina_glimpse
from gdram_ext.validation import check_hyperparameters


class RetinaGlimpse(nn.Module):
    """Extracts ``num_scales`` concentric square glimpses of ``size x size`` cells.

    Scale ``i`` covers ``base_size * scale_factor**i`` pixels a side (``base_size`` defaults to
    ``size``). ``forward(images (B, C, H, W), locations (B, 2)) -> (B, num_scales * C, size, size)``.
    Bad hyper-parameters raise ``ValueError`` at construction, as they do in :func:`retina_glimpse`.
    """

    def __init__(
        self,
        size: int = 12,
        num_scales: int = 4,
        scale_factor: float = 2.0,
        mode: str = "bilinear",
        base_size: float | None = None,
    ) -> None:
        super().__init__()
        check_hyperparameters(size, num_scales, scale_factor, mode, base_size)
        self.size = size
        self.num_scales = num_scales
        self.scale_factor = scale_factor
        self.mode = mode
        self.base_size = base_size

    def forward(self, images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        return retina_glimpse(
            images, locations, self.size, self.num_scales, self.scale_factor, self.mode, self.base_size
        )

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, num_scales={self.num_scales}, scale_factor={self.scale_factor}, "
            f"mode={self.mode!r}, base_size={self.base_size}"
        )
