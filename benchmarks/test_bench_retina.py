"""The retina op against its peers, case by case: forward and forward+backward, both modes.

Each pytest-benchmark group is one case on one device (e.g. ``fwd-bilinear-B128-128x128-S4-g12-cpu``)
and holds every implementation of that mode, so the group's table compares them side by side.
Every implementation's output is checked equal to the fused op's before it is timed (exactly
for the peers that compute the same function, and by shape for the approximate naive crop and
roi_align, which ``tests/retina/test_peers.py`` checks where they are exact).

Forward runs under ``torch.no_grad()`` (inference). Forward+backward differentiates with respect
to the images and, where the implementation supports it, the locations (the fused op does both,
peers 1 and 4 only the images), and records the memory the pass keeps for backward.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.cases import EXACT, FUSED, FUSED_COMPILED, KINDS, Case, cases, implementations
from benchmarks.harness import full_sweep, implementation, peak_cuda_bytes, retained_bytes, synchronised
from benchmarks.peers import PEERS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    kind = metafunc.function.__name__.removeprefix("test_")
    assert kind in KINDS, kind
    full = full_sweep(metafunc.config)
    pairs = [(case, name) for case in cases(kind, full) for name in implementations(case, full)]
    ids = [f"{case.label(kind)}-{name}" for case, name in pairs]
    metafunc.parametrize(("case", "name"), pairs, ids=ids)


def _check_against_fused(
    output: torch.Tensor, name: str, case: Case, images: torch.Tensor, locations: torch.Tensor
) -> None:
    """``output`` has the fused op's shape and, for the implementations in ``EXACT``, its values."""
    images, locations = images.detach(), locations.detach()
    expected = PEERS[FUSED].fn(images, locations, case.size, case.num_scales, case.scale_factor, case.mode)
    assert output.shape == expected.shape
    if name in EXACT:
        torch.testing.assert_close(output.detach(), expected, rtol=1e-4, atol=1e-4)


def test_fwd(benchmark, case: Case, name: str, device: torch.device, extra_info: dict[str, object]) -> None:
    images, locations = case.inputs(device)
    fn = implementation(name)

    def call() -> torch.Tensor:
        with torch.no_grad():
            return fn(images, locations, case.size, case.num_scales, case.scale_factor, case.mode, None)

    _check_against_fused(call(), name, case, images, locations)
    run = synchronised(call, device)
    benchmark.group = case.group("fwd", device)
    benchmark.extra_info.update(extra_info, implementation=name, kind="fwd", **case.params())
    benchmark(run)


def test_fwdbwd(benchmark, case: Case, name: str, device: torch.device, extra_info: dict[str, object]) -> None:
    images, locations = case.inputs(device)
    images.requires_grad_(True)
    location_grad = name == FUSED_COMPILED or PEERS[name].location_grad
    locations.requires_grad_(location_grad)
    inputs = (images, locations) if location_grad else (images,)
    fn = implementation(name)

    def forward() -> torch.Tensor:
        return fn(images, locations, case.size, case.num_scales, case.scale_factor, case.mode, None)

    output = forward()
    _check_against_fused(output, name, case, images, locations)
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1)).to(device)

    def call() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(forward(), inputs, grad_output)

    run = synchronised(call, device)
    if device.type == "cuda":
        memory, measure = peak_cuda_bytes(run), "cuda_peak_allocated"
    else:
        memory, measure = retained_bytes(forward, inputs), "output_plus_saved_for_backward"
    benchmark.group = case.group("fwdbwd", device)
    benchmark.extra_info.update(
        extra_info,
        implementation=name,
        kind="fwdbwd",
        grads="images+locations" if location_grad else "images",
        memory_bytes=memory,
        memory_measure=measure,
        **case.params(),
    )
    benchmark(run)
