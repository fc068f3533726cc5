"""The benchmarked cases of the retina op: the headline, the default sweeps and the full sweeps.

The headline is the paper's retina on its data: batch 128 of 128x128 RGB images, 4 scales of
12x12 cells (factor 2). Every sweep varies one axis of the headline (batch, image size, scales,
glimpse size); image-size cases use batch 32 so that 2048x2048 images fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from benchmarks.peers import PEERS
from gdram_ext import MODES

KINDS = ("fwd", "fwdbwd")
CONTIGUOUS, CHANNELS_LAST = "contiguous", "channels_last"
"""Memory layouts of the images: NCHW (``torch.contiguous_format``) and NHWC (``torch.channels_last``)."""
FUSED = "fused"
FUSED_COMPILED = "fused_compiled"
EXACT = frozenset({"grid_sample_per_scale", "grid_sample_vectorised", "coverage_einsum", FUSED, FUSED_COMPILED})
"""Implementations that compute the fused op's function to float rounding (the others approximate it)."""


@dataclass(frozen=True, order=True)
class Case:
    """One input configuration: images (batch, channels, height, width) in ``layout``, glimpse of
    ``num_scales`` scales of ``size x size`` cells with ``scale_factor`` between scales, in ``mode``."""

    mode: str
    batch: int
    height: int
    width: int
    num_scales: int
    size: int
    channels: int = 3
    scale_factor: float = 2.0
    layout: str = CONTIGUOUS

    def label(self, kind: str) -> str:
        """The case and kind of timing, e.g. ``fwd-bilinear-B128-128x128-S4-g12`` (``-channels_last``
        appended for channels_last images)."""
        layout = "" if self.layout == CONTIGUOUS else f"-{self.layout}"
        return f"{kind}-{self.mode}-B{self.batch}-{self.height}x{self.width}-S{self.num_scales}-g{self.size}{layout}"

    def group(self, kind: str, device: torch.device) -> str:
        """pytest-benchmark group: the label and the device, e.g. ``fwd-bilinear-B128-128x128-S4-g12-cpu``."""
        return f"{self.label(kind)}-{device}"

    def params(self) -> dict[str, object]:
        """The case as a JSON-friendly dict (for ``extra_info``)."""
        return {
            "mode": self.mode,
            "batch": self.batch,
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "num_scales": self.num_scales,
            "size": self.size,
            "scale_factor": self.scale_factor,
            "layout": self.layout,
        }

    def inputs(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded uniform images (B, C, H, W) in [0, 1), in the case's memory layout, and locations
        (B, 2) in the model's range.

        The locations lie where the GDRAM clips them, within half the smallest scale of the edges.
        """
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(self.batch, self.channels, self.height, self.width, generator=generator)
        reach = torch.tensor([1 - self.size / self.width, 1 - self.size / self.height])
        locations = (torch.rand(self.batch, 2, generator=generator) * 2 - 1) * reach
        images = images.to(device)
        if self.layout == CHANNELS_LAST:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, locations.to(device)


def headline(mode: str) -> Case:
    """The issue's headline case: B=128, 128x128 RGB, 4 scales of 12."""
    return Case(mode=mode, batch=128, height=128, width=128, num_scales=4, size=12)


def _image_sweep(mode: str) -> list[Case]:
    small_batch = replace(headline(mode), batch=32)
    sides = [(128, 128), (512, 512), (2048, 2048), (480, 640)]
    return [replace(small_batch, height=height, width=width) for height, width in sides]


def _batch_sweep(mode: str, batches: tuple[int, ...]) -> list[Case]:
    return [replace(headline(mode), batch=batch) for batch in batches]


def cases(kind: str, full: bool) -> list[Case]:
    """Every case of a kind (``fwd``, ``fwdbwd``): the default run or the ``full`` sweep.

    Default: the headline in both modes; for ``fwd`` also the headline on channels_last images (both
    modes), a bilinear batch sweep (1, 32, 512) and a bilinear image sweep (128, 512, 2048 and
    480x640 at batch 32).
    Full: both kinds and modes over batch 1-512, the image sweep, 1-5 scales and glimpses of 8-32,
    and the channels_last headline.
    """
    selected = {headline(mode) for mode in MODES}
    if kind == "fwd":
        selected.update(replace(headline(mode), layout=CHANNELS_LAST) for mode in MODES)
    if full:
        for mode in MODES:
            selected.update(_batch_sweep(mode, (1, 32, 128, 512)))
            selected.update(_image_sweep(mode))
            selected.update(replace(headline(mode), num_scales=scales) for scales in range(1, 6))
            selected.update(replace(headline(mode), size=size) for size in (8, 12, 16, 24, 32))
    elif kind == "fwd":
        selected.update(_batch_sweep("bilinear", (1, 32, 512)))
        selected.update(_image_sweep("bilinear"))
    return sorted(selected)


def implementations(case: Case, full: bool) -> list[str]:
    """The implementations timed on a case: every peer of its mode, plus the compiled fused op on
    the headline (on every case with ``full``)."""
    names = [name for name, peer in PEERS.items() if case.mode in peer.modes]
    if full or case == headline(case.mode):
        names.append(FUSED_COMPILED)
    return names
