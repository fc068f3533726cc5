"""The box op against its peers at TNet's shapes: forward and forward+backward, both modes.

Each pytest-benchmark group is one case on one device (e.g. ``box-fwd-bilinear-B32-512x512-K4-cell256-g64-cpu``)
and holds every implementation of that mode, so the group's table compares them side by side.
Every implementation's output is checked against the fused op's before it is timed: its values where
it computes the same function on the case (:func:`benchmarks.box_cases.exact`), its shape elsewhere
(``tests/boxes/test_box_peers.py`` checks every peer where it is exact).

Forward runs under ``torch.no_grad()`` (inference). Forward+backward differentiates with respect to
the images and, where the implementation supports it, the centres and sides (the fused op,
``affine_grid_sample`` and ``coverage_einsum``; roi_align, TNet's method and the crop loop give image
gradients only), and records the memory the pass keeps for backward.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.box_cases import FUSED, FUSED_COMPILED, KINDS, BoxCase, cases, exact, implementations
from benchmarks.box_peers import BOX_PEERS, Boxes, BoxFn
from benchmarks.harness import WARMUP_CALLS, full_sweep, peak_cuda_bytes, retained_bytes, synchronised
from gdram_ext import box_glimpse


def _warmup(device: torch.device) -> int:
    """Warm-up calls after the checked first call: one on the CPU, where calls take 10 ms to seconds
    (the allocator and the compiled variant are warm after the first), the harness's default on CUDA."""
    return WARMUP_CALLS if device.type == "cuda" else 1


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    kind = metafunc.function.__name__.removeprefix("test_box_")
    assert kind in KINDS, kind
    full = full_sweep(metafunc.config)
    pairs = [(case, name) for case in cases(kind, full) for name in implementations(case, full)]
    ids = [f"{case.label(kind)}-{name}" for case, name in pairs]
    metafunc.parametrize(("case", "name"), pairs, ids=ids)


def implementation(name: str) -> BoxFn:
    """The function of a peer of :data:`benchmarks.box_peers.BOX_PEERS`, or ``fused_compiled``: the op
    under ``torch.compile(fullgraph=True)`` (a fresh compilation, so that the recompilation limit never
    sends a case back to eager)."""
    if name != FUSED_COMPILED:
        return BOX_PEERS[name].fn
    torch.compiler.reset()
    compiled = torch.compile(box_glimpse, fullgraph=True, dynamic=False)

    def fused_compiled(images: torch.Tensor, boxes: Boxes, size: int, mode: str) -> torch.Tensor:
        return compiled(images, boxes.centres, boxes.sides, size, mode)

    return fused_compiled


def _check_against_fused(output: torch.Tensor, name: str, case: BoxCase, images: torch.Tensor, boxes: Boxes) -> None:
    """``output`` has the fused op's shape and, where ``name`` is exact on ``case``, its values."""
    detached = Boxes(boxes.centres.detach(), boxes.sides.detach(), boxes.cells, boxes.grid)
    with torch.no_grad():
        expected = BOX_PEERS[FUSED].fn(images.detach(), detached, case.size, case.mode)
    assert output.shape == expected.shape == (case.batch, case.boxes, case.channels, case.size, case.size)
    if exact(name, case):
        torch.testing.assert_close(output.detach(), expected, rtol=1e-4, atol=1e-4)


def _extra(case: BoxCase, name: str, kind: str) -> dict[str, object]:
    return {"implementation": name, "kind": f"box-{kind}", "exact": exact(name, case)}


def test_box_fwd(benchmark, case: BoxCase, name: str, device: torch.device, extra_info: dict[str, object]) -> None:
    images, boxes = case.inputs(device)
    fn = implementation(name)

    def call() -> torch.Tensor:
        with torch.no_grad():
            return fn(images, boxes, case.size, case.mode)

    _check_against_fused(call(), name, case, images, boxes)
    run = synchronised(call, device, _warmup(device))
    benchmark.group = case.group("fwd", device)
    benchmark.extra_info.update(extra_info, **_extra(case, name, "fwd"), **case.params())
    benchmark(run)


def test_box_fwdbwd(benchmark, case: BoxCase, name: str, device: torch.device, extra_info: dict[str, object]) -> None:
    images, boxes = case.inputs(device)
    images.requires_grad_(True)
    box_grad = name == FUSED_COMPILED or BOX_PEERS[name].box_grad
    boxes.centres.requires_grad_(box_grad)
    boxes.sides.requires_grad_(box_grad)
    inputs = (images, boxes.centres, boxes.sides) if box_grad else (images,)
    fn = implementation(name)

    def forward() -> torch.Tensor:
        return fn(images, boxes, case.size, case.mode)

    output = forward()
    _check_against_fused(output, name, case, images, boxes)
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1)).to(device)

    def call() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(forward(), inputs, grad_output)

    run = synchronised(call, device, _warmup(device))
    if device.type == "cuda":
        memory, measure = peak_cuda_bytes(run), "cuda_peak_allocated"
    else:
        memory = retained_bytes(forward, (images, boxes.centres, boxes.sides))
        measure = "output_plus_saved_for_backward"
    benchmark.group = case.group("fwdbwd", device)
    benchmark.extra_info.update(
        extra_info,
        **_extra(case, name, "fwdbwd"),
        grads="images+centres+sides" if box_grad else "images",
        memory_bytes=memory,
        memory_measure=measure,
        **case.params(),
    )
    benchmark(run)
