"""Dispatcher integration of ``gdram_ext::box_glimpse``: the registered schema, CPU/Meta/Autograd
kernels, ``torch.library.opcheck`` (fake tensor and autograd registration), and
``torch.compile(fullgraph=True)`` giving the eager values and gradients.
"""

from __future__ import annotations

import pytest
import torch
from box_test_cases import random_boxes, random_images
from torch.library import opcheck

from gdram_ext import MODES, backend, box_glimpse

OP_NAME = "gdram_ext::box_glimpse"

compiled_only = pytest.mark.skipif(
    backend().name != "compiled", reason="the compiled extension is not loaded (reference backend)"
)


def raw_op():
    return torch.ops.gdram_ext.box_glimpse.default


@compiled_only
def test_operator_is_registered_with_the_documented_arguments() -> None:
    schema = raw_op()._schema
    assert [argument.name for argument in schema.arguments] == ["images", "centres", "sides", "size", "mode"]
    assert [str(argument.type) for argument in schema.arguments] == ["Tensor", "Tensor", "Tensor", "List[int]", "str"]
    assert len(schema.returns) == 1 and str(schema.returns[0].type) == "Tensor"


@compiled_only
@pytest.mark.parametrize("key", ["CPU", "Meta", "Autograd"])
def test_operator_has_kernels_for_cpu_meta_and_autograd(key: str) -> None:
    assert torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, key)


@compiled_only
def test_operator_has_a_cuda_kernel_when_built_with_cuda() -> None:
    if "cuda" not in backend().kernels:
        pytest.skip("the extension was built without CUDA kernels")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, "CUDA")


@compiled_only
@pytest.mark.parametrize("mode", MODES)
def test_wrapper_dispatches_to_the_registered_operator(mode: str) -> None:
    images = random_images(2, 2, 7, 8, torch.float64, seed=1)
    centres, sides = random_boxes(2, 3, 7, 8, seed=2)
    out = box_glimpse(images, centres, sides, 3, mode)
    direct = raw_op()(images, centres, sides, [3, 3], mode)
    torch.testing.assert_close(out, direct, atol=0, rtol=0)


OPCHECK_CASES = [
    # (images shape, boxes, size (h, w), square sides, channels_last)
    ((2, 3, 8, 9), 2, (4, 4), False, False),
    ((1, 2, 11, 6), 3, (3, 5), True, True),
    ((3, 1, 5, 5), 1, (2, 1), False, False),
]


@compiled_only
@pytest.mark.parametrize(("shape", "count", "size", "square", "channels_last"), OPCHECK_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_passes_with_grad_on_every_input(shape, count: int, size, square: bool, channels_last, mode) -> None:
    images = random_images(*shape, torch.float64, seed=3)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    centres, sides = random_boxes(shape[0], count, shape[2], shape[3], centre_span=(-1.2, 1.2), square=square, seed=4)
    args = (images.requires_grad_(), centres.requires_grad_(), sides.requires_grad_(), list(size), mode)
    opcheck(raw_op(), args)


@compiled_only
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_passes_for_float32_without_grad_and_for_no_boxes(mode: str) -> None:
    images = random_images(2, 2, 7, 10, torch.float32, seed=5)
    centres, sides = random_boxes(2, 2, 7, 10, seed=6, dtype=torch.float32)
    opcheck(raw_op(), (images, centres, sides, [3, 2], mode))
    opcheck(raw_op(), (images, centres[:, :0], sides[:, :0], [3, 2], mode))


@compiled_only
@pytest.mark.parametrize(
    "wanted", [(True, True, True), (True, False, False), (False, True, False), (False, False, True)]
)
def test_opcheck_passes_for_the_backward_operator(wanted: tuple[bool, bool, bool]) -> None:
    images = random_images(2, 3, 8, 9, torch.float64, seed=7)
    centres, sides = random_boxes(2, 2, 8, 9, centre_span=(-1.2, 1.2), seed=8)
    grad_output = torch.randn(2, 2, 3, 4, 3, dtype=torch.float64)
    for mode in MODES:
        args = (grad_output, images, centres, sides, [4, 3], mode, *wanted)
        opcheck(torch.ops.gdram_ext.box_glimpse_backward.default, args)


@compiled_only
@pytest.mark.parametrize("mode", MODES)
def test_double_backward_of_the_compiled_operator_fails_with_a_clear_error(mode: str) -> None:
    """No double backward: asking for one must raise, not give a wrong second derivative silently."""
    images = random_images(2, 2, 8, 8, torch.float64, seed=9).requires_grad_()
    centres, sides = random_boxes(2, 2, 8, 8, seed=10)
    leaves = (images, centres.requires_grad_(), sides.requires_grad_())
    with pytest.raises(RuntimeError, match="box_glimpse"):
        out = box_glimpse(*leaves, (4, 3), mode)
        grads = torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
        torch.autograd.grad(sum(grad.sum() for grad in grads), leaves)


# ----------------------------------------------------------------------------------------------
# torch.compile (the compiled backend: tracing the reference instead takes over a minute here)
# ----------------------------------------------------------------------------------------------


def _both_modes(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
    bilinear = box_glimpse(images, centres, sides, (3, 4), "bilinear")
    area = box_glimpse(images, centres, sides, (3, 4), "area")
    return torch.cat([bilinear, area], dim=2).tanh()


def _forward_backward(fn, images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor):
    leaves = [t.detach().clone().requires_grad_() for t in (images, centres, sides)]
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out.square().sum(), leaves))


@compiled_only
def test_torch_compile_fullgraph_aot_eager_equals_eager_for_new_shapes() -> None:
    """aot_eager keeps this cheap: it exercises dynamo, the fake kernel and the autograd formula."""
    torch._dynamo.reset()
    compiled = torch.compile(_both_modes, fullgraph=True, backend="aot_eager", dynamic=True)
    for batch, count, channels, height, width, square in [(2, 3, 3, 9, 11, False), (3, 1, 1, 14, 6, True)]:
        images = random_images(batch, channels, height, width, torch.float64, seed=7)
        images = images.contiguous(memory_format=torch.channels_last)
        centres, sides = random_boxes(batch, count, height, width, centre_span=(-1.2, 1.2), square=square, seed=8)
        got = _forward_backward(compiled, images, centres, sides)
        expected = _forward_backward(_both_modes, images, centres, sides)
        assert got[0].shape == (batch, count, 2 * channels, 3, 4)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
        with torch.no_grad():
            torch.testing.assert_close(compiled(images, centres, sides), got[0], atol=1e-12, rtol=1e-12)


@compiled_only
def test_torch_compile_fullgraph_inductor_equals_eager() -> None:
    """Inductor (the default backend) with fullgraph=True: a graph break would raise."""
    torch._dynamo.reset()

    def glimpse(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
        return box_glimpse(images, centres, sides, (3, 2), "bilinear") * 2 + 1

    images = random_images(2, 3, 9, 11, torch.float32, seed=11)
    centres, sides = random_boxes(2, 2, 9, 11, seed=12, dtype=torch.float32)
    got = _forward_backward(torch.compile(glimpse, fullgraph=True), images, centres, sides)
    expected = _forward_backward(glimpse, images, centres, sides)
    for a, b in zip(got, expected, strict=True):
        scale = max(b.abs().max().item(), 1.0)
        torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-5)
