"""The benchmarked cases of the box op: TNet's shapes, the default run and the full sweep.

TNet reads a batch of 3x512x512 images through a 3x3 grid of 256-px cells, 128 px apart (its level 2),
keeps K of the 9 cells per image and resizes each to the backbone's input. The default cases are that
grid with K = 2, 4, 9 (9: every cell) to 64x64 and 128x128 cells, in both modes: the boxes are grid
cells so that TNet's method reads the same boxes as every other peer. The full sweep adds a grid of
128-px cells (7x7, 64 px apart) and boxes that are not grid cells (widths and heights drawn from
128-256 px, centres anywhere that keeps the box inside the image; no TNet peer there).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from benchmarks.box_peers import BOX_PEERS, MODES, Boxes, Grid

KINDS = ("fwd", "fwdbwd")
GRID, RANDOM = "grid", "random"
"""Placements of the boxes: cells of a TNet grid, or random rectangles inside the image."""
FUSED = "fused"
FUSED_COMPILED = "fused_compiled"
BATCH, IMAGE, CELL = 32, 512, 256
BOX_COUNTS = (2, 4, 9)
OUTPUT_SIZES = (64, 128)


@dataclass(frozen=True, order=True)
class BoxCase:
    """One input configuration: images (batch, channels, height, width), ``boxes`` boxes per image read
    into ``size x size`` cells in ``mode``; ``side``: the grid's cell side (``placement`` grid: cells
    ``side / 2`` apart) or the largest box side (random: widths and heights in [side / 2, side])."""

    mode: str
    batch: int
    height: int
    width: int
    boxes: int
    side: int
    size: int
    channels: int = 3
    placement: str = GRID

    def label(self, kind: str) -> str:
        """The case and kind of timing, e.g. ``box-fwd-bilinear-B32-512x512-K4-cell256-g64``
        (random boxes: ``-rand128-256``)."""
        where = f"cell{self.side}" if self.placement == GRID else f"rand{self.side // 2}-{self.side}"
        return f"box-{kind}-{self.mode}-B{self.batch}-{self.height}x{self.width}-K{self.boxes}-{where}-g{self.size}"

    def group(self, kind: str, device: torch.device | str) -> str:
        """pytest-benchmark group: the label and the device (``...-g64-cpu``)."""
        return f"{self.label(kind)}-{device}"

    def params(self) -> dict[str, object]:
        """The case as a JSON-friendly dict (for ``extra_info``)."""
        return {
            "op": "box_glimpse",
            "mode": self.mode,
            "batch": self.batch,
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "boxes": self.boxes,
            "side": self.side,
            "size": self.size,
            "placement": self.placement,
        }

    def grid(self) -> Grid | None:
        """The grid whose cells the boxes are (square images; cells half their side apart), or None."""
        if self.placement != GRID:
            return None
        stride = self.side // 2
        return Grid(n=(self.width - self.side) // stride + 1, cell=self.side, stride=stride)

    def inputs(self, device: torch.device) -> tuple[torch.Tensor, Boxes]:
        """Seeded uniform images (B, C, H, W) in [0, 1) and the boxes: K distinct grid cells per image
        (square sides (B, K)), or random rectangles inside the image (sides (B, K, 2))."""
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(self.batch, self.channels, self.height, self.width, generator=generator).to(device)
        grid = self.grid()
        if grid is not None:
            kept = [torch.randperm(grid.n**2, generator=generator)[: self.boxes] for _ in range(self.batch)]
            cells = torch.stack(kept)  # (B, K): K distinct cells per image, as TNet's top-K
            centres, sides = grid.boxes(cells, self.height, self.width)
            return images, Boxes(centres.to(device), sides.to(device), cells.to(device), grid)
        extent = torch.tensor([self.width, self.height], dtype=torch.float32)
        sides = self.side / 2 + torch.rand(self.batch, self.boxes, 2, generator=generator) * (self.side / 2)
        reach = 1 - sides / extent  # the box stays inside the image
        centres = (torch.rand(self.batch, self.boxes, 2, generator=generator) * 2 - 1) * reach
        return images, Boxes(centres.to(device), sides.to(device))


def headline(mode: str) -> BoxCase:
    """The issue's reference case: 32 images of 3x512x512, 4 of TNet's 256-px cells each, to 64x64."""
    return BoxCase(mode=mode, batch=BATCH, height=IMAGE, width=IMAGE, boxes=4, side=CELL, size=64)


def tnet_cases(mode: str) -> list[BoxCase]:
    """The issue's grid (its targets' cases): TNet's cells, K = 2, 4, 9, to 64x64 and 128x128."""
    return [replace(headline(mode), boxes=count, size=size) for count in BOX_COUNTS for size in OUTPUT_SIZES]


def cases(kind: str, full: bool) -> list[BoxCase]:
    """Every case of a kind (``fwd``, ``fwdbwd``): the default run or the ``full`` sweep.

    Default: forward on :func:`tnet_cases` in both modes; forward+backward (seconds per call for
    some peers) on the headline and the largest of them (K = 9 to 128x128), both modes. Full: both
    kinds on every TNet case, a 7x7 grid of 128-px cells and random rectangles of 128-256 px, over the
    same K and output sizes.
    """
    assert kind in KINDS, kind
    selected = {case for mode in MODES for case in tnet_cases(mode)}
    if full:
        for case in list(selected):
            selected.add(replace(case, side=128))
            selected.add(replace(case, placement=RANDOM))
    elif kind == "fwdbwd":
        largest = replace(headline("bilinear"), boxes=max(BOX_COUNTS), size=max(OUTPUT_SIZES))
        selected = {replace(case, mode=mode) for case in (headline("bilinear"), largest) for mode in MODES}
    return sorted(selected)


EXPENSIVE = frozenset({"coverage_einsum"})
"""Peers timed on the headline only unless ``full``: the coverage einsum's dense (h, H) and (w, W)
matrices cost 2-3 s per forward at K = 9 to 128x128 (1 thread)."""


def implementations(case: BoxCase, full: bool) -> list[str]:
    """The implementations timed on a case: every peer of its mode that can read its boxes (the
    :data:`EXPENSIVE` ones on the headline only), plus the compiled fused op on the headline (every
    peer and the compiled op on every case with ``full``)."""
    on_headline = full or case == headline(case.mode)
    names = [
        name
        for name, peer in BOX_PEERS.items()
        if case.mode in peer.modes
        and (case.placement == GRID or not peer.grid_only)
        and (on_headline or name not in EXPENSIVE)
    ]
    if on_headline:
        names.append(FUSED_COMPILED)
    return names


def exact(name: str, case: BoxCase) -> bool:
    """Whether ``name`` computes the fused op's function on ``case`` to float rounding (else it only
    approximates it, and the benchmark checks its shape only).

    Every box is inside the image with cells of at least one pixel, so roi_align's bilinear samples are
    the op's; grid cells have whole-pixel edges, where the crop loop's and TNet's bilinear resize equal
    the op when the cell is at least the output's size, and roi_align's adaptive samples and TNet's
    adaptive pooling give exact cell means when the cell side is a multiple of the output's.
    """
    if name in (FUSED, FUSED_COMPILED, "affine_grid_sample", "coverage_einsum"):
        return True
    if case.mode == "bilinear":
        return name == "roi_align" or (case.placement == GRID and case.side >= case.size)
    return name in ("roi_align", "tnet_unfold") and case.placement == GRID and case.side % case.size == 0
