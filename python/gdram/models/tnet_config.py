"""``TNetConfig``: every hyper-parameter of TNet (Papadopoulos, Korus & Memon, NeurIPS 2021), validated and
JSON round-trippable in the style of :class:`gdram.models.config.GDRAMConfig`.

``TNetConfig()`` is the fMoW layout of the reference code at this package's scale: a 512 px image read
top-down from a 64 px base over 3 levels, a 3x3 grid of half-side cells (stride a quarter of the parent's
side: neighbours overlap by half), 2 cells kept at level 2 and 1 inside each at level 3 (5 backbone passes);
one departure, measured: the whole image is read at 128 px (``overview_size``).
``TNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg`` holds (lists come back as tuples).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from gdram.models.config import _check_non_negative_int, _check_positive_int, python_scalars
from gdram_ext.contract import MODES as RETINA_MODES

SAMPLINGS = ("topk", "gumbel")
POOLINGS = ("max", "mean")
TNET_POLICIES = ("learned", "random", "oracle")
SMALL_CNN = "small_cnn"


@dataclass
class TNetConfig:
    """Hyper-parameters of a TNet model.

    Attributes:
        num_classes: K, the number of classes.
        in_channels: C, channels of the input images.
        image_size: side of the square full-resolution input images, in pixels.
        base_size: side of the backbone's input for a cell: every cell kept (levels 2 and deeper) is resized to
            base_size x base_size.
        overview_size: side of level 1's read of the whole image (the overview the location module chooses
            level 2's cells on), at most image_size; None (the default): base_size / cell_fraction, the pixel
            density of level 2's cells, so that every level's cells are chosen at the density at which level 2
            chooses level 3's (:attr:`overview_side`). The reference reads the overview at base_size: on a 512 px
            canvas read from 64 px, a 28 px digit is then a 3.5 px blob that the location module does not tell
            from the clutter; at 128 px it is a 7 px one (README, "TNet").
        levels: processing levels (>= 1); 1 reads only the whole image, downscaled to overview_side.
        grid_size: n, the location module scores an n x n grid of cells over each attended box (>= 2).
        cell_fraction: a cell's side over its parent box's side, in (0, 1); neighbouring cells lie
            (1 - cell_fraction) / (n - 1) of the parent's side apart.
        cells_per_level: one count per level after the first: cells kept inside each attended box of
            the level before (each <= n * n); level l + 1 reads prod(cells_per_level[:l]) cells per image.
        backbone: ``"small_cnn"`` (three 3x3 stride-2 conv + BatchNorm + ReLU layers, the CPU default) or
            a torchvision classifier name (``"resnet18"``, ``"efficientnet_b0"``, ...), built with
            random weights.
        feature_size: F, width of each attended feature (and of the small CNN's last layer).
        pooling: how the backbone's feature map becomes the box's feature vector and the location module's
            n x n cells, one of :data:`POOLINGS`: ``"max"`` (the largest value of each channel over the map or
            cell) or ``"mean"`` (the reference's averages). The small CNN's units see 15 px: a digit off the
            crop's centre lights a few of its 8x8 positions among the clutter's, and a mean drowns them
            (README, "TNet").
        reinforce_weight: weight of the REINFORCE term in :func:`gdram.models.tnet.tnet_loss`.
        per_feature_weight: weight of the per-feature cross-entropy (the same classifier on every
            attended feature on its own).
        sampling: how the cells are chosen in training: ``"topk"`` (the k most probable, deterministic,
            as the reference code does) or ``"gumbel"`` (Gumbel top-k: k cells sampled without
            replacement, the ordered sample's Plackett-Luce log-probability). Evaluation keeps the top k.
        baseline_decay: the REINFORCE baseline is a moving average of the batch's mean reward,
            b <- decay * b + (1 - decay) * mean(r).
        baseline_init: the baseline's value before the first batch, in [0, 1].
        policy: how the cells are chosen, in training and evaluation, one of :data:`TNET_POLICIES`:
            ``"learned"`` (the location module), ``"random"`` (k cells drawn uniformly without replacement:
            the ablation that shows what the learned choice adds) or ``"oracle"`` (the k cells whose centres
            lie nearest the target box's centre, deterministic: the ceiling of the cell choice; it needs every
            image's box, see :meth:`gdram.models.tnet.TNet.forward`). Neither ``"random"`` nor ``"oracle"``
            runs the location module: their REINFORCE term is 0.
        policy_warmup: epochs at the start of training whose cells (learned policy) are those nearest each
            image's most salient place (:func:`gdram.training.attention.salient_locations` over
            ``salient_window`` px), as the oracle's are nearest the target: the classifier learns to read
            before the location module must find the digit by reward, and the location module learns to
            imitate those cells (the cross-entropy of their log pi takes REINFORCE's place); 0: none.
        salient_window: side in full-resolution pixels of the square whose contrast the warm-up's salient
            place maximises (about the object's size).
        retina_mode: how a box is resized to its side: ``"area"`` (exact mean over each cell,
            anti-aliased) or ``"bilinear"`` (one sample per output pixel, the reference's resize).
    """

    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 512
    base_size: int = 64
    overview_size: int | None = None
    levels: int = 3
    grid_size: int = 3
    cell_fraction: float = 0.5
    cells_per_level: tuple[int, ...] = (2, 1)
    backbone: str = SMALL_CNN
    feature_size: int = 128
    pooling: str = "max"
    reinforce_weight: float = 0.1
    per_feature_weight: float = 0.0
    sampling: str = "topk"
    baseline_decay: float = 0.9
    baseline_init: float = 0.5
    policy: str = "learned"
    policy_warmup: int = 2
    salient_window: int = 24
    retina_mode: str = "area"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # NumPy numbers as Python's, JSON lists as tuples
            setattr(self, field.name, python_scalars(getattr(self, field.name)))
        if isinstance(self.cells_per_level, list):
            self.cells_per_level = tuple(self.cells_per_level)
        names = ("num_classes", "in_channels", "image_size", "base_size", "levels", "feature_size", "salient_window")
        for name in names:
            _check_positive_int(name, getattr(self, name))
        if self.overview_size is not None:
            _check_positive_int("overview_size", self.overview_size)
        _check_positive_int("grid_size", self.grid_size)
        if self.grid_size < 2:
            raise ValueError(f"grid_size must be at least 2, got {self.grid_size!r}")
        if self.base_size > self.image_size:
            raise ValueError(f"base_size ({self.base_size}) must not exceed image_size ({self.image_size})")
        if self.salient_window > self.image_size:
            raise ValueError(f"salient_window ({self.salient_window}) must not exceed image_size ({self.image_size})")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes!r}")
        if _not_number(self.cell_fraction) or not 0 < self.cell_fraction < 1:
            raise ValueError(f"cell_fraction must lie in (0, 1), got {self.cell_fraction!r}")
        self._check_cells_per_level()
        if self.overview_side > self.image_size:
            raise ValueError(f"overview_size ({self.overview_side}) must not exceed image_size ({self.image_size})")
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(f"backbone must be 'small_cnn' or a torchvision classifier name, got {self.backbone!r}")
        for name in ("reinforce_weight", "per_feature_weight"):
            value = getattr(self, name)
            if _not_number(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if _not_number(self.baseline_decay) or not 0 <= self.baseline_decay < 1:
            raise ValueError(f"baseline_decay must lie in [0, 1), got {self.baseline_decay!r}")
        if _not_number(self.baseline_init) or not 0 <= self.baseline_init <= 1:
            raise ValueError(f"baseline_init must lie in [0, 1], got {self.baseline_init!r}")
        if self.policy not in TNET_POLICIES:
            raise ValueError(f"policy must be one of {TNET_POLICIES} for TNet, got {self.policy!r}")
        _check_non_negative_int("policy_warmup", self.policy_warmup)
        if self.retina_mode not in RETINA_MODES:
            raise ValueError(f"retina_mode must be one of {RETINA_MODES}, got {self.retina_mode!r}")

    def _check_cells_per_level(self) -> None:
        counts = self.cells_per_level
        if not isinstance(counts, tuple) or len(counts) != self.levels - 1:
            raise ValueError(
                f"cells_per_level must be a tuple of levels - 1 = {self.levels - 1} counts, got {counts!r}"
            )
        cells = self.grid_size * self.grid_size
        for count in counts:
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= cells:
                raise ValueError(f"cells_per_level must hold integers in [1, {cells}] (n * n), got {counts!r}")

    @property
    def overview_side(self) -> int:
        """Side of level 1's read of the whole image: ``overview_size``, or round(base_size / cell_fraction)
        (at most image_size) when it is None."""
        if self.overview_size is not None:
            return self.overview_size
        return min(self.image_size, round(self.base_size / self.cell_fraction))

    @property
    def cell_stride(self) -> float:
        """Distance between neighbouring cells' origins as a fraction of the parent's side."""
        return (1 - self.cell_fraction) / (self.grid_size - 1)

    @property
    def boxes_per_level(self) -> tuple[int, ...]:
        """Boxes read per image at each level: (1, k_2, k_2 * k_3, ...)."""
        counts = [1]
        for count in self.cells_per_level:
            counts.append(counts[-1] * count)
        return tuple(counts)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict (tuples become lists in JSON; :meth:`from_dict` restores them)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TNetConfig:
        """The config :meth:`to_dict` wrote (also after a JSON trip); unknown keys raise ``TypeError``.

        One written before ``pooling``, ``policy_warmup`` and ``overview_size`` existed averaged its feature maps,
        had no warm-up and read level 1 at its base size.
        """
        old = {"pooling": "mean", "policy_warmup": 0, "overview_size": values.get("base_size", cls.base_size)}
        return cls(**{**old, **values})


def _not_number(value: object) -> bool:
    """Whether ``value`` is not a finite real number (bools are not numbers here)."""
    return isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
