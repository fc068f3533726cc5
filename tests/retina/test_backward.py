"""Backward pass of ``gdram_ext.retina_glimpse``: gradients with respect to images and locations.

Locations are drawn at random (never from "round" values) so that no cell edge or bilinear
sample point sits exactly on a pixel boundary, where the gradients with respect to the
location are one-sided (ties): there the operator and the reference may legitimately differ.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdram_ext import MODES, RetinaGlimpse, reference, retina_glimpse

HYPOTHESIS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_locations(batch: int, low: float, high: float, dtype: torch.dtype = torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 2, generator=generator, dtype=torch.float64) * (high - low) + low).to(dtype)


def grads(fn, images: torch.Tensor, locations: torch.Tensor, grad_output: torch.Tensor | None = None, **kwargs):
    """(output, d images, d locations) of ``fn`` for fresh leaves viewing the inputs.

    detach, not clone: a clone of a view with gaps would be made contiguous."""
    images = images.detach().requires_grad_()
    locations = locations.detach().requires_grad_()
    out = fn(images, locations, **kwargs)
    if grad_output is None:
        grad_output = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grad_images, grad_locations = torch.autograd.grad(
        out, (images, locations), grad_output.to(device=out.device, dtype=out.dtype)
    )
    return out, grad_images, grad_locations


# ----------------------------------------------------------------------------------------------
# gradcheck
# ----------------------------------------------------------------------------------------------

GRADCHECK_CASES = [
    # (shape, (low, high) of the locations, size, num_scales, scale_factor, base_size)
    ((2, 2, 9, 11), (-0.8, 0.8), 3, 2, 1.5, 3.3),  # inside, H != W, non-integer factor and base
    ((2, 1, 8, 8), (0.85, 1.3), 3, 2, 2.0, None),  # across and beyond the bottom-right border
    ((1, 2, 5, 12), (-1.4, -0.9), 2, 3, 1.7, 2.2),  # beyond the top-left border
    ((2, 1, 7, 6), (-0.5, 0.5), 4, 2, 0.6, 9.1),  # shrinking scales, cells smaller than a pixel
]


@pytest.mark.parametrize(("shape", "span", "size", "num_scales", "scale_factor", "base_size"), GRADCHECK_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_passes_for_images_and_locations_in_float64(
    shape: tuple[int, int, int, int],
    span: tuple[float, float],
    size: int,
    num_scales: int,
    scale_factor: float,
    base_size: float | None,
    mode: str,
) -> None:
    images = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    locations = random_locations(shape[0], *span).requires_grad_()

    def glimpse(images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        return retina_glimpse(images, locations, size, num_scales, scale_factor, mode, base_size)

    assert torch.autograd.gradcheck(glimpse, (images, locations), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_passes_with_only_one_input_requiring_grad(mode: str) -> None:
    images = torch.randn(2, 2, 7, 9, dtype=torch.float64)
    locations = random_locations(2, -0.7, 0.7)

    def glimpse(images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        return retina_glimpse(images, locations, 3, 2, 1.5, mode, 2.5)

    assert torch.autograd.gradcheck(glimpse, (images.requires_grad_(), locations))
    assert torch.autograd.gradcheck(glimpse, (images.detach(), locations.requires_grad_()))


@pytest.mark.parametrize("mode", MODES)
def test_gradgradcheck_passes_for_the_reference(mode: str) -> None:
    """The pure-PyTorch reference is twice differentiable (its second derivative is the oracle's)."""
    images = torch.randn(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    locations = random_locations(1, -0.6, 0.6).requires_grad_()

    def glimpse(images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        return reference.retina_glimpse(images, locations, 2, 2, 1.5, mode, 2.7)

    assert torch.autograd.gradgradcheck(glimpse, (images, locations))


@pytest.mark.parametrize("mode", MODES)
def test_double_backward_of_the_compiled_operator_fails_with_a_clear_error(mode: str) -> None:
    """The compiled operator has no double backward: asking for one must raise, not give a wrong
    second derivative silently (the autograd-not-implemented fallback only warns)."""
    images = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    locations = random_locations(2, -0.5, 0.5).requires_grad_()
    with pytest.raises(RuntimeError, match="retina_glimpse"):
        out = retina_glimpse(images, locations, 4, 2, 2.0, mode)
        grad_images, grad_locations = torch.autograd.grad(out.square().sum(), (images, locations), create_graph=True)
        torch.autograd.grad((grad_images.sum() + grad_locations.sum()), (images, locations))


# ----------------------------------------------------------------------------------------------
# Agreement with the reference's autograd
# ----------------------------------------------------------------------------------------------


@st.composite
def backward_cases(draw: st.DrawFn) -> dict:
    return {
        "shape": (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 16)), draw(st.integers(1, 16))),
        "span": draw(st.sampled_from([(-1.0, 1.0), (-1.5, 1.5), (0.7, 1.2)])),
        "size": draw(st.integers(1, 5)),
        "num_scales": draw(st.integers(1, 3)),
        "scale_factor": draw(st.one_of(st.sampled_from([1.0, 1.5, 2.0]), st.floats(0.5, 3.0))),
        "base_size": draw(st.one_of(st.none(), st.floats(0.3, 10.0))),
        "mode": draw(st.sampled_from(MODES)),
        "channels_last": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@HYPOTHESIS
@given(case=backward_cases())
def test_backward_equals_reference_autograd_in_float64(case: dict) -> None:
    generator = torch.Generator().manual_seed(case["seed"])
    images = torch.randn(case["shape"], dtype=torch.float64, generator=generator)
    if case["channels_last"]:
        images = images.contiguous(memory_format=torch.channels_last)
    locations = random_locations(case["shape"][0], *case["span"], seed=case["seed"])
    kwargs = {k: case[k] for k in ("size", "num_scales", "scale_factor", "mode", "base_size")}
    out, grad_images, grad_locations = grads(retina_glimpse, images, locations, **kwargs)
    expected, expected_images, expected_locations = grads(reference.retina_glimpse, images, locations, **kwargs)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grad_images, expected_images, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grad_locations, expected_locations, atol=1e-9, rtol=1e-10)


# |got - float64 reference| <= atol + rtol * |reference| for the images' gradient (one rounding
# of a float32 sum); a location's gradient sums many terms of both signs, each up to about
# max|image| * W / 2, so its error is relative to the largest gradient, not to itself.
BACKWARD_TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("dtype", list(BACKWARD_TOLERANCES))
@pytest.mark.parametrize("mode", MODES)
def test_backward_of_every_dtype_matches_float64_reference_within_its_precision(dtype: torch.dtype, mode: str) -> None:
    images = torch.randn(3, 2, 23, 19).to(dtype)
    locations = random_locations(3, -1.1, 1.1, torch.float32)
    grad_output = torch.randn(3, 6, 6, 6).to(dtype)
    kwargs = {"size": 6, "num_scales": 3, "scale_factor": 1.5, "mode": mode, "base_size": 5.0}
    _, grad_images, grad_locations = grads(retina_glimpse, images, locations, grad_output, **kwargs)
    assert grad_images.dtype == dtype
    assert grad_locations.dtype == torch.float32
    _, expected_images, expected_locations = grads(
        reference.retina_glimpse, images.double(), locations.double(), grad_output.double(), **kwargs
    )
    tol = BACKWARD_TOLERANCES[dtype]
    torch.testing.assert_close(grad_images.double(), expected_images, atol=tol, rtol=tol)
    scale = expected_locations.abs().max().item()
    torch.testing.assert_close(grad_locations.double(), expected_locations, atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_dtypes_follow_their_inputs(mode: str) -> None:
    images = torch.randn(2, 1, 6, 7, dtype=torch.float32)
    locations = random_locations(2, -0.5, 0.5, torch.float64)
    _, grad_images, grad_locations = grads(retina_glimpse, images, locations, mode=mode, size=3, num_scales=2)
    assert grad_images.dtype == torch.float32
    assert grad_locations.dtype == torch.float64
    assert grad_images.shape == images.shape
    assert grad_locations.shape == locations.shape


@pytest.mark.parametrize("mode", MODES)
def test_only_the_requested_gradients_are_computed_and_they_are_right(mode: str) -> None:
    images = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    locations = random_locations(2, -0.9, 0.9)
    kwargs = {"size": 4, "num_scales": 2, "scale_factor": 1.5, "mode": mode, "base_size": 3.0}
    _, expected_images, expected_locations = grads(reference.retina_glimpse, images, locations, **kwargs)
    grad_output = torch.randn(2, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    leaf = images.clone().requires_grad_()
    retina_glimpse(leaf, locations, **kwargs).backward(grad_output)
    torch.testing.assert_close(leaf.grad, expected_images, atol=1e-10, rtol=1e-10)

    leaf = locations.clone().requires_grad_()
    retina_glimpse(images, leaf, **kwargs).backward(grad_output)
    torch.testing.assert_close(leaf.grad, expected_locations, atol=1e-9, rtol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_grad_output_gives_the_same_gradients(mode: str) -> None:
    images = torch.randn(2, 3, 10, 9, dtype=torch.float64)
    locations = random_locations(2, -0.6, 0.6)
    kwargs = {"size": 4, "num_scales": 2, "mode": mode}
    base = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    transposed = base.transpose(2, 3).contiguous().transpose(2, 3)
    expanded = torch.randn(2, 6, 1, 1, dtype=torch.float64).expand(2, 6, 4, 4)
    for grad_output in (transposed, expanded):
        got = grads(retina_glimpse, images, locations, grad_output, **kwargs)
        expected = grads(retina_glimpse, images, locations, grad_output.contiguous(), **kwargs)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_images_give_the_same_gradients_as_contiguous(layout: str, mode: str) -> None:
    contiguous = torch.randn(2, 3, 11, 10, dtype=torch.float32)
    if layout == "channels_last":
        images = contiguous.contiguous(memory_format=torch.channels_last)
    else:
        images = torch.zeros(2, 3, 22, 20)
        images[:, :, ::2, ::2] = contiguous
        images = images[:, :, ::2, ::2]
    locations = random_locations(2, -1.0, 1.0, torch.float32)
    kwargs = {"size": 5, "num_scales": 3, "scale_factor": 1.5, "mode": mode, "base_size": 4.0}
    got = grads(retina_glimpse, images, locations, **kwargs)
    expected = grads(retina_glimpse, contiguous, locations, **kwargs)
    assert got[1].shape == images.shape
    # The same sums, possibly in another order (vectorised paths need unit strides): equal to
    # within float32 rounding, relative to the largest gradient for the locations.
    torch.testing.assert_close(got[0], expected[0], atol=2e-7, rtol=2e-7)
    torch.testing.assert_close(got[1], expected[1], atol=1e-6, rtol=1e-6)
    scale = expected[2].abs().max().item()
    torch.testing.assert_close(got[2], expected[2], atol=1e-6 * scale, rtol=1e-6)


def test_retina_glimpse_module_backpropagates_like_the_function() -> None:
    images = torch.randn(2, 2, 12, 12, dtype=torch.float64)
    locations = random_locations(2, -0.8, 0.8)
    module = RetinaGlimpse(size=4, num_scales=2, scale_factor=1.5, mode="area", base_size=3.0)
    got = grads(lambda x, loc: module(x, loc), images, locations)
    expected = grads(
        retina_glimpse, images, locations, size=4, num_scales=2, scale_factor=1.5, mode="area", base_size=3.0
    )
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_location_gradient_at_ties_lies_between_the_one_sided_derivatives(mode: str) -> None:
    """At a tie (area: cell edges on pixel boundaries; bilinear: samples on pixel centres) the
    output has a kink. Along one axis the glimpse is piecewise linear in the location, so tiny
    one-sided finite differences are exact derivatives; the gradient must be finite and lie
    between them (the operator may pick either side or any mix)."""
    height, width = 12, 16
    images = torch.randn(1, 2, height, width, dtype=torch.float64)
    # Centre (8, 6) pixels with 2-pixel cells (area: edges on boundaries), or centre (8.5, 6.5)
    # with 1-pixel cells (bilinear: every sample at a pixel centre).
    centre, cell = ((8.0, 6.0), 2.0) if mode == "area" else ((8.5, 6.5), 1.0)
    location = torch.tensor([[2 * centre[0] / width - 1, 2 * centre[1] / height - 1]], dtype=torch.float64)
    kwargs = {"size": 3, "num_scales": 2, "scale_factor": 2.0, "mode": mode, "base_size": 3 * cell}
    grad_output = torch.randn(1, 4, 3, 3, dtype=torch.float64)

    def loss(loc: torch.Tensor) -> float:
        return (retina_glimpse(images, loc, **kwargs) * grad_output).sum().item()

    _, _, gradient = grads(retina_glimpse, images, location, grad_output, **kwargs)
    assert torch.isfinite(gradient).all()
    h = 1e-7
    for axis in (0, 1):
        step = torch.zeros_like(location)
        step[0, axis] = h
        right = (loss(location + step) - loss(location)) / h
        left = (loss(location) - loss(location - step)) / h
        slack = 1e-5 * (abs(left) + abs(right) + 1)
        assert min(left, right) - slack <= gradient[0, axis].item() <= max(left, right) + slack


# ----------------------------------------------------------------------------------------------
# Determinism and edge cases
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mode", MODES)
def test_cpu_backward_is_bitwise_deterministic(dtype: torch.dtype, mode: str) -> None:
    # Enough samples that the CPU kernels split both passes between threads.
    images = torch.randn(48, 8, 16, 16).to(dtype)
    locations = random_locations(48, -1.2, 1.2, torch.float32)
    grad_output = torch.randn(48, 24, 6, 6)
    first = grads(retina_glimpse, images, locations, grad_output, size=6, num_scales=3, mode=mode)
    # The CPU backward does not raise in deterministic mode (it has nothing to warn about).
    torch.use_deterministic_algorithms(True)
    try:
        second = grads(retina_glimpse, images, locations, grad_output, size=6, num_scales=3, mode=mode)
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    # Nor do the results depend on how the work is split between threads.
    threads = torch.get_num_threads()
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            other = grads(retina_glimpse, images, locations, grad_output, size=6, num_scales=3, mode=mode)
            for a, b in zip(first, other, strict=True):
                assert torch.equal(a, b)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("mode", MODES)
def test_empty_batch_backward_returns_empty_gradients(device: torch.device, mode: str) -> None:
    images = torch.randn(0, 2, 6, 7, device=device, requires_grad=True)
    locations = torch.zeros(0, 2, device=device, requires_grad=True)
    retina_glimpse(images, locations, 3, 2, 2.0, mode).sum().backward()
    assert images.grad.shape == images.shape
    assert locations.grad.shape == locations.shape


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e30, -1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
def test_non_finite_or_huge_location_gives_finite_zero_gradients_for_that_sample(
    device: torch.device, bad: float, dtype: torch.dtype, mode: str
) -> None:
    images = torch.randn(3, 2, 10, 13, dtype=dtype, device=device)
    locations = random_locations(3, -0.9, 0.9, dtype).to(device)
    locations[1, 0] = bad
    grad_output = torch.randn(3, 6, 4, 4, dtype=dtype, device=device)
    kwargs = {"size": 4, "num_scales": 3, "mode": mode}
    _, grad_images, grad_locations = grads(retina_glimpse, images, locations, grad_output, **kwargs)
    assert torch.isfinite(grad_images).all()
    assert torch.isfinite(grad_locations).all()
    assert torch.equal(grad_images[1], torch.zeros_like(grad_images[1]))
    assert torch.equal(grad_locations[1], torch.zeros_like(grad_locations[1]))
    for b in (0, 2):
        alone = grads(retina_glimpse, images[b : b + 1], locations[b : b + 1], grad_output[b : b + 1], **kwargs)
        # Bitwise on the CPU (one task per sample and channel); CUDA's atomics may reorder sums.
        tol = 0.0 if device.type == "cpu" else 1e-5
        torch.testing.assert_close(grad_images[b : b + 1], alone[1], atol=tol, rtol=tol)
        torch.testing.assert_close(grad_locations[b : b + 1], alone[2], atol=tol, rtol=tol)
