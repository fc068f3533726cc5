"""Every box benchmark peer (benchmarks/box_peers.py) computes the box op's function where it claims to.

The peers are checked against two small oracles written here without grid_sample, roi_align or
interpolate: bilinear taps gathered by hand from a zero-padded image, and exact cell means from an
image supersampled so that every cell edge falls on a sub-pixel edge. ``affine_grid_sample`` and
``coverage_einsum`` must equal them everywhere (boxes across the border too) and differentiate with
respect to centres and sides; roi_align, TNet's method and the crop loop where the benchmark counts
them exact (boxes inside the image; whole-pixel grid cells). Where ``gdram_ext.box_glimpse`` exists,
the exact peers must equal it, gradients included.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import gdram_ext

pytest.importorskip("torchvision")


def _benchmark_box_peers() -> ModuleType:
    """``benchmarks/box_peers.py``, loaded from its file: the ``benchmarks`` package runs from the checkout's
    root (see its ``__init__``), where the tests do not put it on ``sys.path``."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "box_peers.py"
    spec = importlib.util.spec_from_file_location("benchmark_box_peers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_peers = _benchmark_box_peers()
BOX_PEERS = _peers.BOX_PEERS
Boxes = _peers.Boxes
Grid = _peers.Grid
affine_grid_sample = _peers.affine_grid_sample
coverage_einsum = _peers.coverage_einsum
crop_loop = _peers.crop_loop
roi_align_peer = _peers.roi_align_peer
tnet_unfold = _peers.tnet_unfold

needs_op = pytest.mark.skipif(not hasattr(gdram_ext, "box_glimpse"), reason="gdram_ext.box_glimpse does not exist yet")


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def _sides_xy(sides: torch.Tensor) -> torch.Tensor:
    return torch.stack([sides, sides], dim=-1) if sides.dim() == 2 else sides


def bilinear_oracle(images: torch.Tensor, boxes: Boxes, size: int | tuple[int, int]) -> torch.Tensor:
    """Each cell's centre sampled bilinearly by hand, in double, zeros outside the image."""
    images = images.double()
    batch, channels, height, width = images.shape
    h, w = _hw(size)
    pad = 2
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    sides = _sides_xy(boxes.sides.double())
    out = torch.zeros(batch, boxes.centres.shape[1], channels, h, w, dtype=torch.float64)
    for b in range(batch):
        for k in range(boxes.centres.shape[1]):
            cx = (boxes.centres[b, k, 0].double() + 1) / 2 * width
            cy = (boxes.centres[b, k, 1].double() + 1) / 2 * height
            sx, sy = sides[b, k]
            # Cell centres in pixel-centre coordinates (pixel i's centre is i).
            px = cx - sx / 2 + (torch.arange(w, dtype=torch.float64) + 0.5) * sx / w - 0.5
            py = cy - sy / 2 + (torch.arange(h, dtype=torch.float64) + 0.5) * sy / h - 0.5
            x0, y0 = px.floor(), py.floor()
            fx, fy = px - x0, py - y0
            x0 = x0.long().clamp(-pad, width + pad - 2) + pad
            y0 = y0.long().clamp(-pad, height + pad - 2) + pad
            image = padded[b]
            top = image[:, y0[:, None], x0[None, :]] * (1 - fx) + image[:, y0[:, None], x0[None, :] + 1] * fx
            bottom = image[:, y0[:, None] + 1, x0[None, :]] * (1 - fx) + image[:, y0[:, None] + 1, x0[None, :] + 1] * fx
            out[b, k] = top * (1 - fy[:, None]) + bottom * fy[:, None]
    return out


def area_oracle(images: torch.Tensor, boxes: Boxes, size: int | tuple[int, int], factor: int) -> torch.Tensor:
    """Exact cell means, zeros outside the image, for boxes whose cell edges are multiples of
    ``1 / factor`` pixel: the mean of the cell's sub-pixels in the image upsampled ``factor`` times."""
    images = images.double()
    batch, channels, height, width = images.shape
    h, w = _hw(size)
    margin = 64
    fine = images.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
    fine = torch.nn.functional.pad(fine, (margin, margin, margin, margin))
    sides = _sides_xy(boxes.sides.double())
    out = torch.zeros(batch, boxes.centres.shape[1], channels, h, w, dtype=torch.float64)
    for b in range(batch):
        for k in range(boxes.centres.shape[1]):
            left = ((boxes.centres[b, k, 0].double() + 1) / 2 * width - sides[b, k, 0] / 2) * factor
            top = ((boxes.centres[b, k, 1].double() + 1) / 2 * height - sides[b, k, 1] / 2) * factor
            cell_x, cell_y = sides[b, k, 0] / w * factor, sides[b, k, 1] / h * factor
            for i in range(h):
                for j in range(w):
                    y0, y1 = (round(float(top + i * cell_y)), round(float(top + (i + 1) * cell_y)))
                    x0, x1 = (round(float(left + j * cell_x)), round(float(left + (j + 1) * cell_x)))
                    for value in (top + i * cell_y, left + j * cell_x, cell_x, cell_y):
                        assert abs(float(value) - round(float(value))) < 1e-9, "cell edges must be sub-pixel edges"
                    cell = fine[b, :, y0 + margin : y1 + margin, x0 + margin : x1 + margin]
                    out[b, k, :, i, j] = cell.mean(dim=(-2, -1))
    return out


def _images(batch: int, height: int, width: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _grid_boxes(grid: Grid, batch: int, count: int, extent: int, seed: int = 1) -> Boxes:
    generator = torch.Generator().manual_seed(seed)
    cells = torch.stack([torch.randperm(grid.n**2, generator=generator)[:count] for _ in range(batch)])
    centres, sides = grid.boxes(cells, extent, extent)
    return Boxes(centres, sides, cells, grid)


def _random_boxes(
    batch: int, count: int, height: int, width: int, low: float, high: float, inside: bool, seed: int = 2
) -> Boxes:
    """Rectangles with widths and heights in [low, high) pixels; inside the image or anywhere around it."""
    generator = torch.Generator().manual_seed(seed)
    sides = low + torch.rand(batch, count, 2, generator=generator, dtype=torch.float64) * (high - low)
    extent = torch.tensor([width, height], dtype=torch.float64)
    reach = 1 - sides / extent if inside else 1 + sides / extent / 2
    centres = (torch.rand(batch, count, 2, generator=generator, dtype=torch.float64) * 2 - 1) * reach
    return Boxes(centres, sides)


def _quarter_pixel_boxes(batch: int, count: int, height: int, width: int, size: int, seed: int = 3) -> Boxes:
    """Boxes whose cells are whole quarter pixels at quarter-pixel edges, some across the border."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.randint(3, 13, (batch, count, 2), generator=generator).double() / 4  # cells of 0.75-3 px
    sides = cells * size
    left = torch.randint(-24, 4 * width - 8, (batch, count), generator=generator).double() / 4
    top = torch.randint(-24, 4 * height - 8, (batch, count), generator=generator).double() / 4
    centre_x = (left + sides[..., 0] / 2) / width * 2 - 1
    centre_y = (top + sides[..., 1] / 2) / height * 2 - 1
    return Boxes(torch.stack([centre_x, centre_y], dim=-1), sides)


def _cast(boxes: Boxes, dtype: torch.dtype) -> Boxes:
    return Boxes(boxes.centres.to(dtype), boxes.sides.to(dtype), boxes.cells, boxes.grid)


def test_registry_names_every_peer_and_the_fused_op():
    assert set(BOX_PEERS) == {"roi_align", "tnet_unfold", "crop_loop", "affine_grid_sample", "coverage_einsum", "fused"}
    assert BOX_PEERS["affine_grid_sample"].modes == ("bilinear",)
    assert BOX_PEERS["coverage_einsum"].modes == ("area",)
    assert {name for name, peer in BOX_PEERS.items() if peer.box_grad} == {
        "affine_grid_sample",
        "coverage_einsum",
        "fused",
    }


def test_tnet_grid_at_512_pixels_is_three_by_three_cells_of_256():
    grid = Grid(n=3, cell=256, stride=128)
    cells = torch.arange(9)[None]
    centres, sides = grid.boxes(cells, 512, 512)
    expected_x = torch.tensor([-0.5, 0.0, 0.5]).repeat(3)
    expected_y = torch.tensor([-0.5, 0.0, 0.5]).repeat_interleave(3)
    torch.testing.assert_close(centres[0], torch.stack([expected_x, expected_y], dim=-1))
    torch.testing.assert_close(sides, torch.full((1, 9), 256.0))
    patches = torch.arange(512.0).expand(1, 1, 512, 512).unfold(2, 256, 128).unfold(3, 256, 128)
    assert patches.shape == (1, 1, 3, 3, 256, 256)


def test_the_oracles_agree_with_each_other_on_a_linear_image():
    # On an image linear in x and y, a cell's mean is the value at its centre (away from the border).
    extent, size = 32, 4
    rows = torch.arange(extent, dtype=torch.float64)[:, None]
    cols = torch.arange(extent, dtype=torch.float64)[None, :]
    images = (0.3 * rows - 0.7 * cols + 5.0).expand(2, 3, extent, extent).contiguous()
    boxes = _grid_boxes(Grid(n=3, cell=16, stride=8), 2, 3, extent)
    torch.testing.assert_close(bilinear_oracle(images, boxes, size), area_oracle(images, boxes, size, factor=1))


@pytest.mark.parametrize("size", [6, 12, (4, 8)])
def test_bilinear_peers_equal_the_oracle_on_grid_cells(size):
    grid = Grid(n=3, cell=24, stride=12)
    images, boxes = _images(3, 48, 48), _grid_boxes(grid, 3, 4, 48)
    expected = bilinear_oracle(images, boxes, size).float()
    for peer in (roi_align_peer, tnet_unfold, crop_loop, affine_grid_sample):
        torch.testing.assert_close(peer(images, boxes, size, "bilinear"), expected, rtol=1e-5, atol=1e-5)


def test_bilinear_peers_equal_the_oracle_on_a_grid_of_overlapping_cells():
    grid = Grid(n=7, cell=16, stride=8)
    images, boxes = _images(2, 64, 64), _grid_boxes(grid, 2, 9, 64)
    expected = bilinear_oracle(images, boxes, 8).float()
    for peer in (roi_align_peer, tnet_unfold, crop_loop, affine_grid_sample):
        torch.testing.assert_close(peer(images, boxes, 8, "bilinear"), expected, rtol=1e-5, atol=1e-5)


def test_roi_align_and_grid_sample_equal_the_oracle_on_fractional_rectangles_inside_the_image():
    images = _images(2, 40, 56, torch.float64)
    boxes = _random_boxes(2, 5, 40, 56, 7.3, 30.0, inside=True)
    expected = bilinear_oracle(images, boxes, (5, 7))
    for peer in (roi_align_peer, affine_grid_sample):
        torch.testing.assert_close(peer(images, boxes, (5, 7), "bilinear"), expected, rtol=1e-9, atol=1e-9)


def test_grid_sample_equals_the_oracle_across_the_border():
    images = _images(2, 32, 24, torch.float64)
    boxes = _random_boxes(2, 6, 32, 24, 3.0, 20.0, inside=False)
    expected = bilinear_oracle(images, boxes, 6)
    torch.testing.assert_close(affine_grid_sample(images, boxes, 6, "bilinear"), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("cell", "size"), [(24, 6), (24, 12), (24, 24), (16, (4, 8))])
def test_area_peers_equal_the_exact_cell_means_on_grid_cells_that_are_multiples_of_the_output(cell, size):
    grid = Grid(n=3, cell=cell, stride=cell // 2)
    extent = 2 * cell
    images, boxes = _images(2, extent, extent), _grid_boxes(grid, 2, 3, extent)
    expected = area_oracle(images, boxes, size, factor=1).float()
    for peer in (roi_align_peer, tnet_unfold, coverage_einsum):
        torch.testing.assert_close(peer(images, boxes, size, "area"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [3, 5])
def test_coverage_einsum_gives_exact_cell_means_at_quarter_pixels_even_across_the_border(size):
    images = _images(2, 20, 28, torch.float64)
    boxes = _quarter_pixel_boxes(2, 4, 20, 28, size)
    expected = area_oracle(images, boxes, size, factor=4)
    torch.testing.assert_close(coverage_einsum(images, boxes, size, "area"), expected, rtol=1e-9, atol=1e-12)


def test_crop_loop_area_is_an_antialiased_resize_that_keeps_a_constant_image():
    images = torch.full((2, 3, 48, 48), 0.37)
    boxes = _grid_boxes(Grid(n=3, cell=24, stride=12), 2, 4, 48)
    out = crop_loop(images, boxes, 6, "area")
    assert out.shape == (2, 4, 3, 6, 6)
    torch.testing.assert_close(out, torch.full_like(out, 0.37))


def _box_gradients(fn, images, boxes, size, mode, wrt_boxes):
    images = images.clone().requires_grad_(True)
    centres = boxes.centres.clone().requires_grad_(wrt_boxes)
    sides = boxes.sides.clone().requires_grad_(wrt_boxes)
    out = fn(images, Boxes(centres, sides, boxes.cells, boxes.grid), size, mode)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    inputs = (images, centres, sides) if wrt_boxes else (images,)
    return torch.autograd.grad((out * weights).sum(), inputs)


@pytest.mark.parametrize(("peer", "mode"), [(affine_grid_sample, "bilinear"), (coverage_einsum, "area")])
def test_box_differentiable_peers_pass_gradcheck_in_centres_and_sides(peer, mode):
    images = _images(1, 12, 14, torch.float64)
    boxes = _random_boxes(1, 2, 12, 14, 3.3, 9.0, inside=False, seed=5)

    def glimpse(images, centres, sides):
        return peer(images, Boxes(centres, sides), (3, 2), mode)

    inputs = (images.requires_grad_(True), boxes.centres.requires_grad_(True), boxes.sides.requires_grad_(True))
    assert torch.autograd.gradcheck(glimpse, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_image_only_peers_have_the_exact_peers_image_gradient_on_grid_cells(mode):
    grid = Grid(n=3, cell=24, stride=12)
    images, boxes = _images(2, 48, 48, torch.float64), _cast(_grid_boxes(grid, 2, 3, 48), torch.float64)
    exact_peer = affine_grid_sample if mode == "bilinear" else coverage_einsum
    peers = (roi_align_peer, tnet_unfold, crop_loop) if mode == "bilinear" else (roi_align_peer, tnet_unfold)
    (expected,) = _box_gradients(exact_peer, images, boxes, 6, mode, False)
    for peer in peers:
        (got,) = _box_gradients(peer, images, boxes, 6, mode, False)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@needs_op
@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_exact_peers_equal_the_fused_op_with_its_gradients(mode):
    images = _images(2, 40, 56, torch.float64)
    boxes = _random_boxes(2, 3, 40, 56, 6.0, 30.0, inside=False, seed=7)
    peer = affine_grid_sample if mode == "bilinear" else coverage_einsum
    expected = gdram_ext.box_glimpse(images, boxes.centres, boxes.sides, (4, 5), mode)
    torch.testing.assert_close(peer(images, boxes, (4, 5), mode), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(BOX_PEERS["fused"].fn(images, boxes, (4, 5), mode), expected)
    got = _box_gradients(peer, images, boxes, (4, 5), mode, True)
    want = _box_gradients(BOX_PEERS["fused"].fn, images, boxes, (4, 5), mode, True)
    for got_grad, want_grad in zip(got, want, strict=True):
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-7, atol=1e-9)


@needs_op
@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_grid_cell_peers_equal_the_fused_op_at_tnet_geometry(mode):
    grid = Grid(n=3, cell=32, stride=16)
    images, boxes = _images(2, 64, 64), _grid_boxes(grid, 2, 4, 64)
    expected = gdram_ext.box_glimpse(images, boxes.centres, boxes.sides, 8, mode)
    peers = (roi_align_peer, tnet_unfold) + ((crop_loop, affine_grid_sample) if mode == "bilinear" else ())
    for peer in peers:
        torch.testing.assert_close(peer(images, boxes, 8, mode), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BOX_PEERS))
def test_every_peer_gives_the_box_major_shape_in_each_of_its_modes(name):
    peer = BOX_PEERS[name]
    images, boxes = _images(2, 48, 48), _grid_boxes(Grid(n=3, cell=24, stride=12), 2, 5, 48)
    for mode in peer.modes:
        assert peer.fn(images, boxes, (6, 4), mode).shape == (2, 5, 3, 6, 4)


@pytest.mark.parametrize("name", sorted(set(BOX_PEERS) - {"fused"}))
def test_peers_reject_modes_they_do_not_implement(name):
    peer = BOX_PEERS[name]
    images, boxes = _images(1, 48, 48), _grid_boxes(Grid(n=3, cell=24, stride=12), 1, 2, 48)
    for mode in {"bilinear", "area", "nearest"} - set(peer.modes):
        with pytest.raises(ValueError, match="implements modes"):
            peer.fn(images, boxes, 4, mode)


def test_tnet_method_needs_grid_cells():
    images = _images(1, 32, 32)
    with pytest.raises(ValueError, match="grid cells"):
        tnet_unfold(images, Boxes(torch.zeros(1, 2, 2), torch.full((1, 2), 8.0)), 4, "bilinear")


def test_crop_loop_rounds_edges_half_up():
    # A 0.3-pixel shift of an 8-px box rounds back to the whole-pixel box.
    images = _images(1, 32, 32)
    aligned = Boxes(torch.zeros(1, 1, 2), torch.full((1, 1), 8.0))
    shifted = Boxes(torch.tensor([[[0.3 * 2 / 32, 0.0]]]), torch.full((1, 1), 8.0))
    torch.testing.assert_close(crop_loop(images, shifted, 4, "bilinear"), crop_loop(images, aligned, 4, "bilinear"))
