"""Every benchmark peer (benchmarks/peers.py) computes the fused op's function where it claims to.

Peers 2 and 3 and the coverage einsum must equal the fused op to float rounding everywhere, with
the same gradients. The naive crop rounds squares to whole pixels and roi_align samples on a
fixed grid with border replication, so they are compared where those are provably exact:
pixel-aligned squares, squares inside the image, linear and constant images.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from gdram_ext import MODES, retina_glimpse


def _benchmark_peers() -> ModuleType:
    """``benchmarks/peers.py``, loaded from its file: the ``benchmarks`` package runs from the checkout's
    root (see its ``__init__``), where the tests do not put it on ``sys.path``."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"
    spec = importlib.util.spec_from_file_location("benchmark_peers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_peers = _benchmark_peers()
PEERS = _peers.PEERS
coverage_einsum = _peers.coverage_einsum
grid_sample_per_scale = _peers.grid_sample_per_scale
grid_sample_vectorised = _peers.grid_sample_vectorised
naive_crop = _peers.naive_crop
roi_align_glimpse = _peers.roi_align_glimpse

# (size, num_scales, scale_factor, base_size, height, width)
GENERAL_CASES = [
    (12, 4, 2.0, None, 128, 128),
    (8, 3, 1.7, 10.3, 61, 97),
    (5, 2, 2.5, None, 40, 33),
]
# Pixel-aligned: every side is even and a multiple of ``size``; power-of-two images so that
# integer centres are exact in float32.
ALIGNED_CASES = [
    (12, 4, 2.0, None, 128, 128),
    (8, 3, 3.0, None, 64, 128),
]


def _images(batch: int, height: int, width: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=generator, dtype=dtype)


def _random_locations(batch: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 2, generator=generator, dtype=dtype) * 2 - 1


def _locations_at_pixels(centres: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 2) pixel-edge centres (cx, cy) -> locations in [-1, 1]."""
    return centres / centres.new_tensor([width, height]) * 2 - 1


def _aligned_locations(batch: int, height: int, width: int, margin: int = 0, seed: int = 2) -> torch.Tensor:
    """Integer pixel centres at least ``margin`` pixels from every edge."""
    generator = torch.Generator().manual_seed(seed)
    cx = torch.randint(margin, width - margin + 1, (batch,), generator=generator)
    cy = torch.randint(margin, height - margin + 1, (batch,), generator=generator)
    return _locations_at_pixels(torch.stack([cx, cy], dim=1).float(), height, width)


def _gradients(fn, images, locations, size, num_scales, scale_factor, mode, base_size, wrt_locations):
    images = images.clone().requires_grad_(True)
    locations = locations.clone().requires_grad_(wrt_locations)
    out = fn(images, locations, size, num_scales, scale_factor, mode, base_size)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    inputs = (images, locations) if wrt_locations else (images,)
    return torch.autograd.grad((out * weights).sum(), inputs)


def test_peer_registry_names_every_peer_and_the_fused_op():
    assert set(PEERS) == {
        "naive_crop",
        "grid_sample_per_scale",
        "grid_sample_vectorised",
        "coverage_einsum",
        "roi_align",
        "fused",
    }
    assert PEERS["fused"].fn is retina_glimpse


@pytest.mark.parametrize("peer", [grid_sample_per_scale, grid_sample_vectorised])
@pytest.mark.parametrize("case", GENERAL_CASES)
def test_grid_sample_peers_equal_fused_bilinear_at_any_location(peer, case):
    size, num_scales, scale_factor, base_size, height, width = case
    images, locations = _images(4, height, width), _random_locations(4)
    expected = retina_glimpse(images, locations, size, num_scales, scale_factor, "bilinear", base_size)
    got = peer(images, locations, size, num_scales, scale_factor, "bilinear", base_size)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("peer", [grid_sample_per_scale, grid_sample_vectorised])
def test_grid_sample_peers_have_the_fused_gradients_to_images_and_locations(peer):
    size, num_scales, scale_factor, base_size, height, width = GENERAL_CASES[1]
    images, locations = _images(3, height, width, torch.float64), _random_locations(3, torch.float64)
    args = (size, num_scales, scale_factor, "bilinear", base_size, True)
    for got, expected in zip(
        _gradients(peer, images, locations, *args), _gradients(retina_glimpse, images, locations, *args), strict=True
    ):
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("case", GENERAL_CASES)
def test_coverage_einsum_equals_fused_area_with_the_same_gradients(case):
    size, num_scales, scale_factor, base_size, height, width = case
    images, locations = _images(2, height, width, torch.float64), _random_locations(2, torch.float64)
    expected = retina_glimpse(images, locations, size, num_scales, scale_factor, "area", base_size)
    got = coverage_einsum(images, locations, size, num_scales, scale_factor, "area", base_size)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    args = (size, num_scales, scale_factor, "area", base_size, True)
    for got_grad, expected_grad in zip(
        _gradients(coverage_einsum, images, locations, *args),
        _gradients(retina_glimpse, images, locations, *args),
        strict=True,
    ):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ALIGNED_CASES)
def test_naive_crop_equals_fused_on_pixel_aligned_squares_even_across_the_border(mode, case):
    size, num_scales, scale_factor, base_size, height, width = case
    corners = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    images, locations = _images(8, height, width), torch.cat([_aligned_locations(5, height, width), corners])
    expected = retina_glimpse(images, locations, size, num_scales, scale_factor, mode, base_size)
    got = naive_crop(images, locations, size, num_scales, scale_factor, mode, base_size)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_naive_crop_has_the_fused_gradient_to_images_on_pixel_aligned_squares(mode):
    size, num_scales, scale_factor, base_size, height, width = ALIGNED_CASES[0]
    images = _images(3, height, width, torch.float64)
    locations = _aligned_locations(3, height, width).double()
    args = (size, num_scales, scale_factor, mode, base_size, False)
    (got,) = _gradients(naive_crop, images, locations, *args)
    (expected,) = _gradients(retina_glimpse, images, locations, *args)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


def test_naive_crop_rounds_an_unaligned_square_to_the_nearest_pixel():
    images = _images(1, 32, 32)
    shift = 0.3 * 2 / 32  # 0.3 pixel right of the aligned centre (16, 16)
    unaligned = torch.tensor([[shift, 0.0]])
    got = naive_crop(images, unaligned, 4, 2, 2.0, "area")
    torch.testing.assert_close(got, retina_glimpse(images, torch.zeros(1, 2), 4, 2, 2.0, "area"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [(12, 3, 2.0, None, 128, 128), (8, 2, 3.0, None, 64, 128)])
def test_roi_align_equals_fused_on_pixel_aligned_squares_inside_the_image(mode, case):
    size, num_scales, scale_factor, base_size, height, width = case
    largest = round(size * scale_factor ** (num_scales - 1))
    images, locations = _images(6, height, width), _aligned_locations(6, height, width, margin=largest // 2)
    expected = retina_glimpse(images, locations, size, num_scales, scale_factor, mode, base_size)
    got = roi_align_glimpse(images, locations, size, num_scales, scale_factor, mode, base_size)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_roi_align_bilinear_equals_fused_on_a_linear_image_at_unaligned_locations():
    height, width, size, num_scales, scale_factor, base_size = 96, 80, 7, 3, 1.9, 9.4
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    cols = torch.arange(width, dtype=torch.float64)[None, :]
    images = (0.3 * rows - 0.7 * cols + 5.0).expand(2, 1, height, width).contiguous()
    half = base_size * scale_factor ** (num_scales - 1) / 2 + 1  # every sample at least half a pixel inside
    generator = torch.Generator().manual_seed(3)
    centres = torch.stack(
        [
            half + torch.rand(2, generator=generator, dtype=torch.float64) * (width - 2 * half),
            half + torch.rand(2, generator=generator, dtype=torch.float64) * (height - 2 * half),
        ],
        dim=1,
    )
    locations = _locations_at_pixels(centres, height, width)
    expected = retina_glimpse(images, locations, size, num_scales, scale_factor, "bilinear", base_size)
    got = roi_align_glimpse(images, locations, size, num_scales, scale_factor, "bilinear", base_size)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_roi_align_area_equals_fused_on_a_constant_image_with_fractional_cells():
    height, width, size, num_scales, scale_factor, base_size = 64, 64, 6, 3, 1.6, 7.7
    images = torch.full((2, 2, height, width), 0.37)
    locations = torch.tensor([[0.11, -0.23], [-0.3, 0.07]])
    expected = retina_glimpse(images, locations, size, num_scales, scale_factor, "area", base_size)
    got = roi_align_glimpse(images, locations, size, num_scales, scale_factor, "area", base_size)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, torch.full_like(got, 0.37))


@pytest.mark.parametrize("name", sorted(PEERS))
def test_every_peer_gives_the_scale_major_shape_in_each_of_its_modes(name):
    peer = PEERS[name]
    images, locations = _images(2, 40, 56), _random_locations(2) * 0.5
    for mode in peer.modes:
        assert peer.fn(images, locations, 6, 3, 2.0, mode, None).shape == (2, 9, 6, 6)


@pytest.mark.parametrize("name", sorted(set(PEERS) - {"fused"}))
def test_peers_reject_modes_they_do_not_implement(name):
    peer = PEERS[name]
    for mode in set(MODES) - set(peer.modes):
        with pytest.raises(ValueError, match="implements modes"):
            peer.fn(_images(1, 16, 16), torch.zeros(1, 2), 4, 1, 2.0, mode, None)
