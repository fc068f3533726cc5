"""CUDA: ``box_glimpse`` on the GPU agrees with the CPU and the reference, passes gradcheck and
opcheck, and captures in CUDA graphs (forward, and forward + backward). Skipped without a GPU.
"""

from __future__ import annotations

import pytest
import torch
from box_test_cases import LAYOUTS, TOLERANCES, random_boxes, random_images, with_layout
from torch.library import opcheck

from gdram_ext import MODES, backend, box_glimpse, reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
]
cuda_kernels = pytest.mark.skipif(
    "cuda" not in backend().kernels, reason="the extension was built without CUDA kernels"
)


def forward_backward(images, centres, sides, size, mode, grad_output):
    """(output, d images, d centres, d sides); detach, not clone: a clone of a view with gaps is contiguous."""
    leaves = [t.detach().requires_grad_() for t in (images, centres, sides)]
    out = box_glimpse(*leaves, size, mode)
    return (out, *torch.autograd.grad(out, leaves, grad_output))


def assert_box_grads_close(got: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    """A box's gradient sums many terms of both signs: its error is relative to the largest."""
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(got, expected, atol=max(tol, 1e-5) * scale, rtol=max(tol, 1e-5))


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("square", [True, False])
def test_cuda_forward_and_backward_equal_cpu(dtype: torch.dtype, layout: str, mode: str, square: bool) -> None:
    images = random_images(3, 4, 21, 17, dtype, seed=1)
    centres, sides = random_boxes(
        3, 5, 21, 17, centre_span=(-1.2, 1.2), side_span=(0.7, 19.0), square=square, seed=2, dtype=torch.float32
    )
    grad_output = torch.randn(3, 5, 4, 6, 5).to(dtype)
    cpu = forward_backward(with_layout(images, layout), centres, sides, (6, 5), mode, grad_output)
    gpu = forward_backward(
        with_layout(images.cuda(), layout), centres.cuda(), sides.cuda(), (6, 5), mode, grad_output.cuda()
    )
    tol = TOLERANCES[dtype]
    assert gpu[0].dtype == dtype and gpu[0].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=tol, rtol=tol)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=tol, rtol=tol)
    assert_box_grads_close(gpu[2].cpu(), cpu[2], tol)
    assert_box_grads_close(gpu[3].cpu(), cpu[3], tol)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_forward_and_backward_equal_reference_in_float64(mode: str) -> None:
    images = random_images(2, 3, 19, 25, torch.float64, seed=3).cuda()
    centres, sides = random_boxes(2, 4, 19, 25, centre_span=(-1.4, 1.4), side_span=(0.5, 30.0), seed=4)
    centres, sides = centres.cuda(), sides.cuda()
    grad_output = torch.randn(2, 4, 3, 5, 4, dtype=torch.float64, device="cuda")
    got = forward_backward(images, centres, sides, (5, 4), mode, grad_output)
    leaves = [t.detach().clone().requires_grad_() for t in (images, centres, sides)]
    out = reference.box_glimpse(*leaves, (5, 4), mode)
    expected = (out, *torch.autograd.grad(out, leaves, grad_output))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_passes_on_cuda(mode: str) -> None:
    images = random_images(2, 2, 7, 9, torch.float64, seed=5).cuda().requires_grad_()
    centres, sides = random_boxes(2, 2, 7, 9, centre_span=(-0.9, 0.9), seed=6)

    def glimpse(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
        return box_glimpse(images, centres, sides, (3, 2), mode)

    inputs = (images, centres.cuda().requires_grad_(), sides.cuda().requires_grad_())
    # Atomic float64 additions may reorder: allow a rounding-level non-determinism.
    assert torch.autograd.gradcheck(glimpse, inputs, nondet_tol=1e-12)


@cuda_kernels
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_passes_on_cuda(mode: str) -> None:
    images = random_images(2, 3, 8, 9, torch.float64, seed=7).cuda().requires_grad_()
    centres, sides = random_boxes(2, 3, 8, 9, centre_span=(-1.2, 1.2), seed=8)
    args = (images, centres.cuda().requires_grad_(), sides.cuda().requires_grad_(), [4, 3], mode)
    opcheck(torch.ops.gdram_ext.box_glimpse.default, args)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_degenerate_boxes_read_zeros_with_zero_gradients(mode: str) -> None:
    nan, inf = float("nan"), float("inf")
    images = torch.randn(1, 2, 8, 8, device="cuda")
    centres = torch.tensor([[[nan, 0.0], [0.0, inf], [1e30, 0.0], [0.0, 0.0], [0.0, 0.0], [0.1, 0.2]]], device="cuda")
    sides = torch.tensor([[[3.0, 3.0], [3.0, 3.0], [3.0, 3.0], [inf, 3.0], [3.0, -1.0], [3.3, 2.9]]], device="cuda")
    grad_output = torch.randn(1, 6, 2, 3, 3, device="cuda")
    out, grad_images, grad_centres, grad_sides = forward_backward(images, centres, sides, 3, mode, grad_output)
    assert torch.equal(out[0, :5], torch.zeros_like(out[0, :5]))
    assert out[0, 5].abs().sum() > 0
    assert torch.equal(grad_centres[0, :5], torch.zeros_like(grad_centres[0, :5]))
    assert torch.equal(grad_sides[0, :5], torch.zeros_like(grad_sides[0, :5]))
    assert torch.isfinite(grad_images).all()


@pytest.mark.parametrize("mode", MODES)
def test_cuda_handles_no_boxes_and_no_images(mode: str) -> None:
    for batch, count in [(2, 0), (0, 3)]:
        images = torch.randn(batch, 3, 8, 9, device="cuda", requires_grad=True)
        centres = torch.zeros(batch, count, 2, device="cuda", requires_grad=True)
        sides = torch.ones(batch, count, device="cuda", requires_grad=True)
        out = box_glimpse(images, centres, sides, (4, 5), mode)
        assert out.shape == (batch, count, 3, 4, 5) and out.device.type == "cuda"
        out.sum().backward()
        assert torch.equal(images.grad, torch.zeros_like(images))


@pytest.mark.parametrize("mode", MODES)
def test_cuda_forward_is_bitwise_reproducible(mode: str) -> None:
    images = torch.randn(4, 3, 64, 64, device="cuda")
    centres, sides = random_boxes(4, 4, 64, 64, side_span=(8.0, 48.0), seed=9, dtype=torch.float32)
    centres, sides = centres.cuda(), sides.cuda()
    first = box_glimpse(images, centres, sides, (16, 12), mode)
    assert torch.equal(first, box_glimpse(images, centres, sides, (16, 12), mode))


def test_cuda_rejects_inputs_on_different_devices() -> None:
    images = torch.randn(2, 1, 8, 8, device="cuda")
    centres, sides = torch.zeros(2, 3, 2), torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"\bdevice\b"):
        box_glimpse(images, centres, sides.cuda(), 4)
    with pytest.raises(ValueError, match=r"\bdevice\b"):
        box_glimpse(images, centres.cuda(), sides, 4)
    with pytest.raises(ValueError, match=r"\bdevice\b"):
        box_glimpse(images.cpu(), centres.cuda(), sides.cuda(), 4)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_large_boxes_and_outputs_equal_cpu(mode: str) -> None:
    """The issue's common case, scaled down: 256 px images, 4 boxes of 64-200 px read at 64 x 48."""
    images = torch.rand(2, 3, 256, 256)
    centres, sides = random_boxes(2, 4, 256, 256, centre_span=(-0.9, 0.9), side_span=(64.0, 200.0), seed=10)
    centres, sides = centres.float(), sides.float()
    grad_output = torch.randn(2, 4, 3, 64, 48)
    cpu = forward_backward(images, centres, sides, (64, 48), mode, grad_output)
    gpu = forward_backward(images.cuda(), centres.cuda(), sides.cuda(), (64, 48), mode, grad_output.cuda())
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=1e-5, rtol=1e-5)
    assert_box_grads_close(gpu[2].cpu(), cpu[2], 1e-5)
    assert_box_grads_close(gpu[3].cpu(), cpu[3], 1e-5)


# ----------------------------------------------------------------------------------------------
# CUDA graphs: capture once, replay on new values written into the captured inputs
# ----------------------------------------------------------------------------------------------


def _new_values(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor):
    new_images = torch.randn_like(images)
    new_centres = (torch.rand_like(centres) * 2.4 - 1.2).to(centres.dtype)
    new_sides = (torch.rand_like(sides) * 10 + 0.5).to(sides.dtype)
    new_centres[0, 0, 0] = float("nan")  # a non-finite centre replays too: zeros, no host check
    new_sides[1, 0] = -1.0  # and so does a negative side
    return new_images, new_centres, new_sides


def _capture(step):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up outside the capture
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()
    return graph, static


@cuda_kernels
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_replay_of_the_forward_equals_eager(dtype: torch.dtype, mode: str) -> None:
    images = torch.randn(3, 2, 16, 12, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
    centres = torch.rand(3, 4, 2, device="cuda") - 0.5
    sides = torch.rand(3, 4, 2, device="cuda") * 6 + 1
    graph, static_out = _capture(lambda: box_glimpse(images, centres, sides, (5, 3), mode))

    new_images, new_centres, new_sides = _new_values(images, centres, sides)
    images.copy_(new_images)
    centres.copy_(new_centres)
    sides.copy_(new_sides)
    graph.replay()
    torch.cuda.synchronize()
    expected = box_glimpse(new_images, new_centres, new_sides, (5, 3), mode)
    torch.testing.assert_close(static_out, expected, atol=0, rtol=0)
    assert torch.equal(static_out[0, 0], torch.zeros_like(static_out[0, 0]))
    assert torch.equal(static_out[1, 0], torch.zeros_like(static_out[1, 0]))


@cuda_kernels
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_replay_of_forward_and_backward_equals_eager(dtype: torch.dtype, mode: str) -> None:
    images = torch.randn(3, 2, 16, 12, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
    centres = torch.rand(3, 4, 2, device="cuda") - 0.5
    sides = torch.rand(3, 4, 2, device="cuda") * 6 + 1
    leaves = [t.requires_grad_() for t in (images, centres, sides)]
    grad_output = torch.randn(3, 4, 2, 5, 3, device="cuda").to(dtype)

    def step():
        out = box_glimpse(*leaves, (5, 3), mode)
        return (out, *torch.autograd.grad(out, leaves, grad_output))

    graph, static = _capture(step)
    new_values = _new_values(*(t.detach() for t in leaves))
    with torch.no_grad():
        for leaf, value in zip(leaves, new_values, strict=True):
            leaf.copy_(value)
    graph.replay()
    torch.cuda.synchronize()
    expected = forward_backward(*new_values, (5, 3), mode, grad_output)
    tol = TOLERANCES[dtype]  # the backward's atomics may add in another order
    torch.testing.assert_close(static[0], expected[0], atol=0, rtol=0)
    torch.testing.assert_close(static[1], expected[1], atol=tol, rtol=tol)
    assert_box_grads_close(static[2], expected[2], tol)
    assert_box_grads_close(static[3], expected[3], tol)
    for grad in static[2:]:
        assert torch.equal(grad[0, 0], torch.zeros_like(grad[0, 0]))
        assert torch.equal(grad[1, 0], torch.zeros_like(grad[1, 0]))
