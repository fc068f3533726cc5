"""``GDRAMConfig``: every hyper-parameter of the GDRAM family, validated and JSON round-trippable.

``GDRAMConfig()`` is the paper's model (Gaussian RAM, ICCAS 2020): T = 8 glimpses of 4 scales
of 12x12 (factor 2) on 128x128 RGB images, two LSTM cores of 128, 10 classes.
``GDRAMConfig(**dataclasses.asdict(cfg)) == cfg`` holds, also after a JSON trip (lists come
back as tuples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

VARIANTS = ("gdram", "dram", "gram", "ram", "ram-dl", "cnn")
RETINA_MODES = ("bilinear", "area")
CONTEXT_MODES = ("nearest", "bilinear", "area")


class VariantSpec(NamedTuple):
    """What an attention variant of the paper's ablation (Table 1) switches on.

    ``two_cores``: a lower (classification) and an upper (location) LSTM core, the upper one
    initialised from the context network (DRAM); otherwise one core does both.
    ``learned_sigma``: the emission network learns sigma and the steps are weighted by
    eq. 12-16 (Gaussian); otherwise sigma is ``fixed_sigma`` and every weight is 1.
    ``relative_moves``: l_{t+1} = l_t + Δl_t (eq. 9); otherwise the action is the next location.
    """

    two_cores: bool
    learned_sigma: bool
    relative_moves: bool


VARIANT_SPECS = {
    "gdram": VariantSpec(two_cores=True, learned_sigma=True, relative_moves=True),
    "dram": VariantSpec(two_cores=True, learned_sigma=False, relative_moves=True),
    "gram": VariantSpec(two_cores=False, learned_sigma=True, relative_moves=True),
    "ram": VariantSpec(two_cores=False, learned_sigma=False, relative_moves=False),
    "ram-dl": VariantSpec(two_cores=False, learned_sigma=False, relative_moves=True),
}


@dataclass
class GDRAMConfig:
    """Hyper-parameters of a GDRAM-family model.

    Attributes:
        num_classes: K, the number of classes.
        in_channels: C, channels of the input images.
        image_size: side of the square input images, or (H, W).
        glimpse_size: g, cells per side of every retina scale (the smallest scale covers g pixels).
        num_scales: S, concentric scales per glimpse.
        scale_factor: ratio of each scale's side to the previous one's.
        retina_mode: ``"bilinear"`` (the paper's sampling) or ``"area"`` (anti-aliased mean).
        num_glimpses: T, glimpses per image.
        hidden_size: width of the glimpse features, of the location MLP and of each LSTM core.
        glimpse_channels: channels of the glimpse CNN's two conv layers.
        context_channels: channels of the context CNN's two conv layers.
        mlp_hidden_size: hidden width of the emission, prediction and baseline MLPs.
        context_mode: how the context network downsamples the image to g x g
            (``F.interpolate`` mode; the published implementation uses ``"nearest"``).
        variant: one of :data:`VARIANTS` (the paper's Table 1 ablation).
        fixed_sigma: the move's standard deviation for the non-Gaussian variants.
        official_footprint: the published glimpse footprint, whose first scale spans
            g * H / (H - 1) pixels instead of g (square images only).
        cnn_pool_size: spatial size the CNN baseline pools its features to before its FC layer.
    """

    num_classes: int = 10
    in_channels: int = 3
    image_size: int | tuple[int, int] = 128
    glimpse_size: int = 12
    num_scales: int = 4
    scale_factor: float = 2.0
    retina_mode: str = "bilinear"
    num_glimpses: int = 8
    hidden_size: int = 128
    glimpse_channels: tuple[int, int] = (128, 256)
    context_channels: int = 64
    mlp_hidden_size: int = 256
    context_mode: str = "nearest"
    variant: str = "gdram"
    fixed_sigma: float = 0.15
    official_footprint: bool = False
    cnn_pool_size: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        if isinstance(self.glimpse_channels, list):
            self.glimpse_channels = tuple(self.glimpse_channels)
        for name in (
            "num_classes",
            "in_channels",
            "glimpse_size",
            "num_scales",
            "num_glimpses",
            "hidden_size",
            "context_channels",
            "mlp_hidden_size",
            "cnn_pool_size",
        ):
            _check_positive_int(name, getattr(self, name))
        if isinstance(self.image_size, tuple):
            if len(self.image_size) != 2:
                raise ValueError(f"image_size must be an int or (H, W), got {self.image_size!r}")
            for side in self.image_size:
                _check_positive_int("image_size", side)
        else:
            _check_positive_int("image_size", self.image_size)
        if not (isinstance(self.glimpse_channels, tuple) and len(self.glimpse_channels) == 2):
            raise ValueError(f"glimpse_channels must be a pair of ints, got {self.glimpse_channels!r}")
        for channels in self.glimpse_channels:
            _check_positive_int("glimpse_channels", channels)
        _check_positive_float("scale_factor", self.scale_factor)
        _check_positive_float("fixed_sigma", self.fixed_sigma)
        if self.retina_mode not in RETINA_MODES:
            raise ValueError(f"retina_mode must be one of {RETINA_MODES}, got {self.retina_mode!r}")
        if self.context_mode not in CONTEXT_MODES:
            raise ValueError(f"context_mode must be one of {CONTEXT_MODES}, got {self.context_mode!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not isinstance(self.official_footprint, bool):
            raise ValueError(f"official_footprint must be a bool, got {self.official_footprint!r}")
        height, width = self.image_hw
        if self.glimpse_size < 4:
            raise ValueError(f"glimpse_size must be at least 4 (two 2x2 poolings), got {self.glimpse_size}")
        if self.glimpse_size >= min(height, width):
            raise ValueError(
                f"glimpse_size ({self.glimpse_size}) must be smaller than the image's sides {self.image_hw}"
            )
        if self.official_footprint and height != width:
            raise ValueError(f"official_footprint needs square images, got image_size={self.image_size!r}")

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the input images."""
        if isinstance(self.image_size, tuple):
            return self.image_size
        return (self.image_size, self.image_size)

    @property
    def spec(self) -> VariantSpec:
        """The switches of this attention variant (``ValueError`` for ``"cnn"``, which has none)."""
        if self.variant not in VARIANT_SPECS:
            raise ValueError(f"variant {self.variant!r} is not an attention model; use create_model")
        return VARIANT_SPECS[self.variant]

    @property
    def retina_base_size(self) -> float | None:
        """``base_size`` of the retina op: g * H / (H - 1) for the published footprint, else None (= g)."""
        if not self.official_footprint:
            return None
        height = self.image_hw[0]
        return self.glimpse_size * height / (height - 1)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_positive_float(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
