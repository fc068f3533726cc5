"""Dispatcher integration: one registered operator, fake and autograd kernels, torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch.library import opcheck

from gdram_ext import MODES, backend, retina_glimpse

OP_NAME = "gdram_ext::retina_glimpse"

compiled_only = pytest.mark.skipif(
    backend().name != "compiled", reason="the compiled extension is not loaded (reference backend)"
)
pytestmark = compiled_only


def test_operator_is_registered_with_the_documented_schema() -> None:
    schema = str(torch.ops.gdram_ext.retina_glimpse.default._schema)
    assert schema == (
        "gdram_ext::retina_glimpse(Tensor images, Tensor locations, int size, int num_scales, "
        "float scale_factor, str mode, float base_size) -> Tensor"
    )


@pytest.mark.parametrize("key", ["CPU", "Meta", "Autograd"])
def test_operator_has_kernels_for_cpu_meta_and_autograd(key: str) -> None:
    assert torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, key)


def test_operator_has_a_cuda_kernel_when_built_with_cuda() -> None:
    if "cuda" not in backend().kernels:
        pytest.skip("the extension was built without CUDA kernels")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, "CUDA")


def test_wrapper_dispatches_to_the_registered_operator() -> None:
    """The public function is a thin wrapper: the work happens in the dispatcher op."""
    images = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    locations = torch.zeros(1, 2, dtype=torch.float64)
    out = retina_glimpse(images, locations, 3, 2, 1.5, "area", 2.0)
    direct = torch.ops.gdram_ext.retina_glimpse.default(images, locations, 3, 2, 1.5, "area", 2.0)
    torch.testing.assert_close(out, direct, atol=0, rtol=0)
    # base_size=None resolves to size.
    out = retina_glimpse(images, locations, 3, 2, 1.5, "bilinear")
    direct = torch.ops.gdram_ext.retina_glimpse.default(images, locations, 3, 2, 1.5, "bilinear", 3.0)
    torch.testing.assert_close(out, direct, atol=0, rtol=0)


OPCHECK_CASES = [
    # (images shape, size, num_scales, scale_factor, base_size, channels_last)
    ((2, 3, 8, 9), 4, 2, 2.0, 4.0, False),
    ((1, 2, 11, 6), 3, 3, 1.5, 2.5, True),
    ((3, 1, 5, 5), 2, 1, 1.0, 7.0, False),
]


@pytest.mark.parametrize(("shape", "size", "num_scales", "scale_factor", "base_size", "channels_last"), OPCHECK_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_passes_with_grad_on_both_inputs(
    shape: tuple[int, int, int, int],
    size: int,
    num_scales: int,
    scale_factor: float,
    base_size: float,
    channels_last: bool,
    mode: str,
) -> None:
    images = torch.randn(shape, dtype=torch.float64)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    locations = torch.rand(shape[0], 2, dtype=torch.float64) * 2.4 - 1.2
    args = (images.requires_grad_(), locations.requires_grad_(), size, num_scales, scale_factor, mode, base_size)
    opcheck(torch.ops.gdram_ext.retina_glimpse.default, args)


@pytest.mark.parametrize("mode", MODES)
def test_opcheck_passes_for_float32_without_grad(mode: str) -> None:
    images = torch.randn(2, 2, 7, 10)
    locations = torch.rand(2, 2) - 0.5
    opcheck(torch.ops.gdram_ext.retina_glimpse.default, (images, locations, 3, 2, 2.0, mode, 3.0))


@pytest.mark.parametrize(("images_grad", "locations_grad"), [(True, True), (True, False), (False, True)])
def test_opcheck_passes_for_the_backward_operator(images_grad: bool, locations_grad: bool) -> None:
    images = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    locations = torch.rand(2, 2, dtype=torch.float64) - 0.5
    grad_output = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    for mode in MODES:
        args = (grad_output, images, locations, 4, 2, 2.0, mode, 4.0, images_grad, locations_grad)
        opcheck(torch.ops.gdram_ext.retina_glimpse_backward.default, args)


def _both_modes(images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    bilinear = retina_glimpse(images, locations, 4, 2, 1.5, "bilinear", 3.0)
    area = retina_glimpse(images, locations, 4, 2, 1.5, "area", 3.0)
    return torch.cat([bilinear, area], dim=1).tanh()


def _forward_backward(fn, images: torch.Tensor, locations: torch.Tensor):
    images = images.detach().clone().requires_grad_()
    locations = locations.detach().clone().requires_grad_()
    out = fn(images, locations)
    grad_images, grad_locations = torch.autograd.grad(out.square().sum(), (images, locations))
    return out, grad_images, grad_locations


@pytest.mark.parametrize("mode", MODES)
def test_torch_compile_fullgraph_forward_and_backward_equal_eager(mode: str) -> None:
    """Inductor (the default backend) with fullgraph=True: a graph break would raise."""
    torch._dynamo.reset()

    def glimpse(images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        return retina_glimpse(images, locations, 4, 2, 1.5, mode, 3.0)

    images = torch.randn(2, 3, 9, 11)
    locations = torch.rand(2, 2) * 2 - 1
    got = _forward_backward(torch.compile(glimpse, fullgraph=True), images, locations)
    expected = _forward_backward(glimpse, images, locations)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_torch_compile_with_dynamic_shapes_traces_the_fake_kernel_for_new_shapes() -> None:
    """aot_eager keeps this cheap: it exercises dynamo, the fake kernel and the autograd formula."""
    torch._dynamo.reset()
    compiled = torch.compile(_both_modes, fullgraph=True, backend="aot_eager", dynamic=True)
    for batch, channels, height, width in [(2, 3, 9, 11), (3, 1, 14, 6), (1, 2, 5, 5)]:
        images = torch.randn(batch, channels, height, width, dtype=torch.float64)
        images = images.contiguous(memory_format=torch.channels_last)
        locations = torch.rand(batch, 2, dtype=torch.float64) * 2 - 1
        got = _forward_backward(compiled, images, locations)
        expected = _forward_backward(_both_modes, images, locations)
        assert got[0].shape == (batch, 4 * channels, 4, 4)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
        # Inference only (no autograd graph, another compiled graph) agrees too.
        with torch.no_grad():
            torch.testing.assert_close(compiled(images, locations), got[0], atol=1e-12, rtol=1e-12)
