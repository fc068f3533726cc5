"""CUDA: the same operator on the GPU agrees with the CPU, captures in CUDA graphs, and its
(atomic, hence non-deterministic) backward refuses deterministic mode. Skipped without a GPU.
"""

from __future__ import annotations

import pytest
import torch
from torch.library import opcheck

from gdram_ext import MODES, backend, reference, retina_glimpse

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
]
cuda_kernels = pytest.mark.skipif(
    "cuda" not in backend().kernels, reason="the extension was built without CUDA kernels"
)

# |CUDA - CPU| <= atol + rtol * |CPU|: both compute coordinates in double and accumulate in the
# dtype's opmath type, then round once; half precision results may differ by one rounding.
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def layout(images: torch.Tensor, name: str) -> torch.Tensor:
    if name == "channels_last":
        return images.contiguous(memory_format=torch.channels_last)
    if name == "strided":
        batch, channels, height, width = images.shape
        big = images.new_zeros(batch, channels, 2 * height, 2 * width)
        big[:, :, ::2, ::2] = images
        return big[:, :, ::2, ::2]
    return images.contiguous()


def forward_backward(images: torch.Tensor, locations: torch.Tensor, grad_output: torch.Tensor, **kwargs):
    # detach, not clone: a clone of a view with gaps would be made contiguous.
    images = images.detach().requires_grad_()
    locations = locations.detach().requires_grad_()
    out = retina_glimpse(images, locations, **kwargs)
    grad_images, grad_locations = torch.autograd.grad(out, (images, locations), grad_output)
    return out, grad_images, grad_locations


def random_locations(batch: int, low: float = -1.2, high: float = 1.2) -> torch.Tensor:
    return torch.rand(batch, 2, dtype=torch.float64) * (high - low) + low


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("memory", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("mode", MODES)
def test_cuda_forward_and_backward_equal_cpu(dtype: torch.dtype, memory: str, mode: str) -> None:
    images = torch.randn(3, 4, 21, 17).to(dtype)
    locations = random_locations(3).to(torch.float32)
    kwargs = {"size": 6, "num_scales": 3, "scale_factor": 1.5, "mode": mode, "base_size": 5.0}
    grad_output = torch.randn(3, 12, 6, 6).to(dtype)
    cpu = forward_backward(layout(images, memory), locations, grad_output, **kwargs)
    gpu = forward_backward(layout(images.cuda(), memory), locations.cuda(), grad_output.cuda(), **kwargs)
    tol = TOLERANCES[dtype]
    assert gpu[0].dtype == dtype and gpu[0].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=tol, rtol=tol)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=tol, rtol=tol)
    # A location's gradient sums many terms of both signs: its error is relative to the largest.
    scale = cpu[2].abs().max().item()
    torch.testing.assert_close(gpu[2].cpu(), cpu[2], atol=max(tol, 1e-5) * scale, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_forward_and_backward_equal_reference_in_float64(mode: str) -> None:
    images = torch.randn(2, 3, 19, 25, dtype=torch.float64, device="cuda")
    locations = random_locations(2, -1.4, 1.4).cuda()
    grad_output = torch.randn(2, 9, 5, 5, dtype=torch.float64, device="cuda")
    kwargs = {"size": 5, "num_scales": 3, "scale_factor": 1.7, "mode": mode, "base_size": 4.5}
    got = forward_backward(images, locations, grad_output, **kwargs)
    images_ref = images.detach().clone().requires_grad_()
    locations_ref = locations.detach().clone().requires_grad_()
    out = reference.retina_glimpse(images_ref, locations_ref, **kwargs)
    expected = (out, *torch.autograd.grad(out, (images_ref, locations_ref), grad_output))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_passes_on_cuda(mode: str) -> None:
    images = torch.randn(2, 2, 7, 9, dtype=torch.float64, device="cuda", requires_grad=True)
    locations = random_locations(2, -0.9, 0.9).cuda().requires_grad_()

    def glimpse(images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        return retina_glimpse(images, locations, 3, 2, 1.5, mode, 3.3)

    # Atomic float64 additions may reorder: allow a rounding-level non-determinism.
    assert torch.autograd.gradcheck(glimpse, (images, locations), nondet_tol=1e-12)


@cuda_kernels
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_passes_on_cuda(mode: str) -> None:
    images = torch.randn(2, 3, 8, 9, dtype=torch.float64, device="cuda", requires_grad=True)
    locations = random_locations(2).cuda().requires_grad_()
    opcheck(torch.ops.gdram_ext.retina_glimpse.default, (images, locations, 4, 2, 2.0, mode, 4.0))


@cuda_kernels
@pytest.mark.parametrize("mode", MODES)
def test_cuda_backward_raises_under_deterministic_algorithms(mode: str) -> None:
    images = torch.randn(2, 2, 8, 8, device="cuda", requires_grad=True)
    locations = random_locations(2).float().cuda().requires_grad_()
    torch.use_deterministic_algorithms(True)
    try:
        out = retina_glimpse(images, locations, 4, 2, 2.0, mode)  # the forward has no atomics
        with pytest.raises(RuntimeError, match="deterministic"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_forward_is_bitwise_reproducible(mode: str) -> None:
    images = torch.randn(4, 3, 32, 32, device="cuda")
    locations = random_locations(4).float().cuda()
    first = retina_glimpse(images, locations, 8, 3, 2.0, mode)
    assert torch.equal(first, retina_glimpse(images, locations, 8, 3, 2.0, mode))


def test_cuda_rejects_images_and_locations_on_different_devices() -> None:
    images = torch.randn(2, 1, 8, 8, device="cuda")
    with pytest.raises(ValueError, match=r"\bdevice\b"):
        retina_glimpse(images, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"\bdevice\b"):
        retina_glimpse(images.cpu(), torch.zeros(2, 2, device="cuda"))


@cuda_kernels
def test_cuda_raw_op_rejects_images_and_locations_on_different_devices() -> None:
    images = torch.randn(2, 1, 8, 8, device="cuda")
    with pytest.raises(RuntimeError, match=r"\bdevice\b"):
        torch.ops.gdram_ext.retina_glimpse.default(images, torch.zeros(2, 2), 4, 2, 2.0, "bilinear", 4.0)
    with pytest.raises(RuntimeError, match=r"\bdevice\b"):
        torch.ops.gdram_ext.retina_glimpse.default(
            images.cpu(), torch.zeros(2, 2, device="cuda"), 4, 2, 2.0, "area", 4.0
        )


@pytest.mark.parametrize("mode", MODES)
def test_cuda_handles_a_batch_larger_than_a_grid_dimension(mode: str) -> None:
    """70000 samples: more than the 65535 blocks a grid's y or z dimension can hold."""
    batch = 70_000
    images = torch.randn(batch, 1, 4, 4)
    locations = random_locations(batch).float()
    grad_output = torch.randn(batch, 2, 2, 2)
    kwargs = {"size": 2, "num_scales": 2, "scale_factor": 1.5, "mode": mode, "base_size": 2.0}
    cpu = forward_backward(images, locations, grad_output, **kwargs)
    gpu = forward_backward(images.cuda(), locations.cuda(), grad_output.cuda(), **kwargs)
    for a, b in zip(gpu, cpu, strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_handles_more_cells_per_sample_than_one_grid_row_of_blocks(mode: str) -> None:
    """1025 channels of 128 x 128 cells in one sample: more than 65535 blocks of 256 threads.

    Every channel holds the same image and output gradient, so every channel's result must
    equal a cheap one-channel CPU run (and the location's gradient 1025 times its)."""
    channels = 1025
    plane = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    locations = torch.tensor([[0.1, -0.2]], dtype=torch.float64)
    grad_plane = torch.randn(1, 1, 128, 128, dtype=torch.float64)
    kwargs = {"size": 128, "num_scales": 1, "scale_factor": 1.0, "mode": mode, "base_size": 12.0}
    cpu = forward_backward(plane, locations, grad_plane, **kwargs)
    gpu = forward_backward(
        plane.repeat(1, channels, 1, 1).cuda(), locations.cuda(), grad_plane.repeat(1, channels, 1, 1).cuda(), **kwargs
    )
    torch.testing.assert_close(gpu[0].cpu(), cpu[0].expand(1, channels, 128, 128), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1].expand(1, channels, 16, 16), atol=1e-9, rtol=1e-9)
    scale = cpu[2].abs().max().item() * channels
    torch.testing.assert_close(gpu[2].cpu(), cpu[2] * channels, atol=1e-9 * scale, rtol=1e-9)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_runs_on_a_non_default_device(mode: str) -> None:
    images = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    locations = random_locations(2)
    grad_output = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    kwargs = {"size": 3, "num_scales": 2, "mode": mode}
    cpu = forward_backward(images, locations, grad_output, **kwargs)
    device = torch.device("cuda", 1)
    gpu = forward_backward(images.to(device), locations.to(device), grad_output.to(device), **kwargs)
    for a, b in zip(gpu, cpu, strict=True):
        assert a.device == device
        torch.testing.assert_close(a.cpu(), b, atol=1e-9, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# CUDA graphs: capture once, replay on new values written into the captured inputs
# ----------------------------------------------------------------------------------------------


def _new_values(images: torch.Tensor, locations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    new_images = torch.randn_like(images)
    new_locations = (torch.rand_like(locations) * 2.4 - 1.2).to(locations.dtype)
    new_locations[0, 0] = float("nan")  # a non-finite location replays too: zeros, no host check
    return new_images, new_locations


@cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_replay_of_the_forward_equals_eager(dtype: torch.dtype, mode: str) -> None:
    kwargs = {"size": 5, "num_scales": 3, "scale_factor": 1.5, "mode": mode, "base_size": 4.0}
    images = torch.randn(3, 2, 16, 12, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
    locations = torch.rand(3, 2, device="cuda") - 0.5
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up outside the capture
            retina_glimpse(images, locations, **kwargs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = retina_glimpse(images, locations, **kwargs)

    new_images, new_locations = _new_values(images, locations)
    images.copy_(new_images)
    locations.copy_(new_locations)
    graph.replay()
    torch.cuda.synchronize()
    expected = retina_glimpse(new_images, new_locations, **kwargs)
    torch.testing.assert_close(static_out, expected, atol=0, rtol=0)
    assert torch.equal(static_out[0], torch.zeros_like(static_out[0]))


@cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_replay_of_forward_and_backward_equals_eager(dtype: torch.dtype, mode: str) -> None:
    kwargs = {"size": 5, "num_scales": 3, "scale_factor": 1.5, "mode": mode, "base_size": 4.0}
    images = torch.randn(3, 2, 16, 12, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
    locations = (torch.rand(3, 2, device="cuda") - 0.5).requires_grad_()
    images.requires_grad_()
    grad_output = torch.randn(3, 6, 5, 5, device="cuda").to(dtype)

    def step() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = retina_glimpse(images, locations, **kwargs)
        grad_images, grad_locations = torch.autograd.grad(out, (images, locations), grad_output)
        return out, grad_images, grad_locations

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()

    new_images, new_locations = _new_values(images.detach(), locations.detach())
    with torch.no_grad():
        images.copy_(new_images)
        locations.copy_(new_locations)
    graph.replay()
    torch.cuda.synchronize()
    expected = forward_backward(new_images, new_locations, grad_output, **kwargs)
    tol = TOLERANCES[dtype]  # the backward's atomics may add in another order
    torch.testing.assert_close(static[0], expected[0], atol=0, rtol=0)
    torch.testing.assert_close(static[1], expected[1], atol=tol, rtol=tol)
    scale = expected[2].abs().max().item()
    torch.testing.assert_close(static[2], expected[2], atol=max(tol, 1e-5) * scale, rtol=1e-5)
    assert torch.equal(static[1][0], torch.zeros_like(static[1][0]))
    assert torch.equal(static[2][0], torch.zeros_like(static[2][0]))
