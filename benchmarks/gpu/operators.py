"""Step 2 of the GPU run: the operators against their peers on CUDA, each figure beside its floor.

* Retina (``gdram_ext.retina_glimpse``): the headline cases of ``benchmarks/cases.py`` (3x128x128 images,
  4 scales of 12x12, factor 2) at batch 128 and 512, both modes, forward (under ``no_grad``) and
  forward + backward (``autograd.grad`` to the images and, where the implementation can, the locations),
  against every peer of ``benchmarks/peers.py`` for that mode, plus the fused op replayed from a CUDA graph
  (its GPU time without launch overhead) and, at batch 128, under ``torch.compile`` (timed last: the
  compilations are the first thing a short budget drops).
* Box (``gdram_ext.box_glimpse``, when present): the box suite's default cases (``benchmarks/box_cases.py``:
  32 images of 3x512x512, K = 2, 4, 9 of TNet's 256-px grid cells, to 64x64 and 128x128), both modes, forward
  and forward + backward (images, centres and sides where the implementation can), against the suite's peers
  (``benchmarks/box_peers.py``: roi_align, TNet's unfold + interpolate, a crop loop, affine_grid + grid_sample,
  coverage einsum), the fused op replayed from a CUDA graph and, on the headline, under ``torch.compile``.
  Without the suite: K = 2, 4, 9 random square boxes of 128-256 px against roi_align(aligned=True) and
  affine_grid + grid_sample.

The floor beside each figure is the larger of: the bytes the op must move (its output written and the input
pixels its samples need, read once; forward + backward adds the output gradient read, the taps read again and
the dense image gradient written) over the measured copy bandwidth; and the launches it needs (1 forward,
2 forward + backward) times the measured time of a tiny eager op. Batch 128 of 3x128x128 float32 (25 MB)
fits in the H200's 60 MB L2, so the HBM floor there is a lead, not a bound.

``python3 benchmarks/gpu/operators.py --out operators.md [--budget 90] [--device auto] [--smoke]``
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from gpubench import (
    Budget,
    Ceilings,
    Report,
    Timing,
    common_arguments,
    cuda_graph,
    describe_ceilings,
    environment_lines,
    fmt_ms,
    measure_ceilings,
    pick_device,
    smoke_run,
    time_calls,
)

import gdram_ext
from benchmarks.cases import EXACT, FUSED, FUSED_COMPILED, Case, implementations
from benchmarks.harness import implementation
from benchmarks.peers import PEERS
from gdram_ext import MODES
from gdram_ext.contract import scale_sides

FUSED_GRAPH = "fused (CUDA graph)"
PEER_ORDER = ("grid_sample_per_scale", "grid_sample_vectorised", "coverage_einsum", "roi_align", "naive_crop")
ELEMENT = 4  # float32
HEADER = [
    "case",
    "implementation",
    "median ms",
    "min ms",
    "x fused",
    "HBM floor us",
    "launch floor us",
    "/ floor",
    "max abs diff",
]


@dataclass
class Row:
    """One timed implementation of a case (``timing`` None: not timed, ``note`` says why)."""

    name: str
    timing: Timing | None
    diff: str
    note: str = ""


@dataclass
class Impl:
    """An implementation of a case: ``forward(*inputs)`` -> output; the backward differentiates the first
    ``grads`` inputs (1: the images only); ``exact``: it computes the fused op's function on the case;
    ``graph``: timed as a CUDA-graph replay; ``timed``: False for a reference that is only run."""

    name: str
    forward: Callable[..., torch.Tensor]
    grads: int
    exact: bool
    graph: bool = False
    timed: bool = True


@dataclass
class Spec:
    """One case of one kind: its ``inputs`` (images first), implementations (the fused op first) and floors in
    ms: HBM bytes, eager launches (tiny eager ops), and kernels (empty kernels: a CUDA-graph replay's floor)."""

    label: str
    kind: str
    inputs: tuple[torch.Tensor, ...]
    impls: list[Impl]
    hbm_ms: float
    launch_ms: float
    kernel_ms: float = 0.0


def read_pixels(width: float, height: float, cells: int, mode: str, image_pixels: int) -> int:
    """Pixels per channel that a box of ``width x height`` px read into ``cells`` cells must read at least: the
    box (plus the bilinear border) for ``area``; for ``bilinear`` at most 4 taps per cell."""
    box = (math.ceil(width) + 1) * (math.ceil(height) + 1)
    need = box if mode == "area" else min(box, 4 * cells)
    return min(need, image_pixels)


def floor_bytes(
    kind: str, mode: str, channels: int, height: int, width: int, samples: list[list[tuple[float, float, int]]]
) -> int:
    """Bytes a glimpse op must move for ``samples``, each a list of boxes (width px, height px, output cells):
    the forward reads the pixels its samples need and writes the output; the backward reads the output
    gradient and the taps again and writes the dense image gradient. Locations and boxes are negligible."""
    total = 0
    for boxes in samples:
        pixels = min(height * width, sum(read_pixels(bw, bh, cells, mode, height * width) for bw, bh, cells in boxes))
        out = sum(cells for _, _, cells in boxes)
        total += channels * (pixels + out)
        if kind == "fwdbwd":
            total += channels * (out + pixels + height * width)
    return total * ELEMENT


def floors(ceilings: Ceilings, nbytes: int, kind: str) -> tuple[float, float, float]:
    """(HBM floor, eager launch floor, kernel floor) in milliseconds: 1 launch forward, 2 forward + backward."""
    launches = 1 if kind == "fwd" else 2
    return ceilings.bytes_ms(nbytes), launches * ceilings.tiny_op_ms, launches * ceilings.empty_kernel_ms


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (150 characters at most)."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0][:150] if lines else ''}"


def max_diff(output: torch.Tensor, expected: torch.Tensor, exact: bool) -> str:
    """``max |output - expected|`` for an implementation of the same function, else ``approx``."""
    if output.shape != expected.shape:
        return f"SHAPE {tuple(output.shape)} vs {tuple(expected.shape)}"
    if not exact:
        return "approx"
    return f"{(output.float() - expected.float()).abs().max().item():.1e}"


def time_impl(impl: Impl, spec: Spec, expected: torch.Tensor, grad_output: torch.Tensor, device) -> Row:
    """Check ``impl`` against the fused op's output, then time it (forward or forward + backward)."""
    if spec.kind == "fwd":

        def call() -> torch.Tensor:
            with torch.no_grad():
                return impl.forward(*spec.inputs)

        diff = max_diff(call(), expected, impl.exact)
    else:
        leaves = [t.detach().requires_grad_(i < impl.grads) for i, t in enumerate(spec.inputs)]
        wanted = tuple(leaves[: impl.grads])

        def call() -> tuple[torch.Tensor, ...]:
            return torch.autograd.grad(impl.forward(*leaves), wanted, grad_output)

        diff = max_diff(impl.forward(*leaves).detach(), expected, impl.exact)
    run = cuda_graph(call, device) if impl.graph else call
    return Row(impl.name, time_calls(run, device, target_seconds=0.3), diff)


def measure(spec: Spec, device: torch.device, budget: Budget, deadline: float) -> list[Row]:
    """Every implementation of ``spec`` timed, in order, until ``deadline`` seconds of the budget."""
    with torch.no_grad():
        expected = spec.impls[0].forward(*spec.inputs)
    grad_output = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1)).to(device, expected.dtype)
    rows = []
    for impl in spec.impls:
        if (impl.graph and device.type != "cuda") or not impl.timed:
            continue
        if budget.elapsed() > deadline:
            rows.append(Row(impl.name, None, "", "skipped: budget spent"))
            continue
        try:
            rows.append(time_impl(impl, spec, expected, grad_output, device))
        except Exception as error:  # a peer or the op failing must not end the run
            traceback.print_exc()
            rows.append(Row(impl.name, None, "", f"FAILED: {first_line(error)}"))
    return rows


def emit(report: Report, spec: Spec, rows: list[Row], fused_ms: float | None = None) -> float:
    """Write the case's rows (each time over the fused op's eager time and over its floor); returns the fused
    op's eager median (``fused_ms`` when given: a case timed earlier)."""
    found = next((row.timing.median for row in rows if row.name == FUSED and row.timing), math.nan)
    fused = found if fused_ms is None else fused_ms
    floor = max(spec.hbm_ms, spec.launch_ms, spec.kernel_ms)
    floors_us = [f"{spec.hbm_ms * 1e3:.1f}", f"{spec.launch_ms * 1e3:.1f}"]
    for row in rows:
        if row.timing is None:
            report.row([spec.label, row.name, "-", "-", "-", *floors_us, "-", row.note])
            continue
        # a replay has no launch overhead: its floor is the bytes or its kernels' empty-kernel time
        own_floor = max(spec.hbm_ms, spec.kernel_ms) if row.name == FUSED_GRAPH else floor
        report.row(
            [
                spec.label,
                row.name,
                fmt_ms(row.timing.median),
                fmt_ms(row.timing.minimum),
                f"{row.timing.median / fused:.2f}" if fused == fused else "-",
                *floors_us,
                f"{row.timing.median / own_floor:.1f}",
                row.diff + (f" {row.note}" if row.note else ""),
            ]
        )
    return fused


# ------------------------------------------------------------------------------------------------ retina


def retina_specs(device: torch.device, ceilings: Ceilings, smoke: bool) -> list[tuple[Spec, Callable[[], Spec]]]:
    """Every retina case as (spec, builder of the same case with the compiled fused op alone, or None)."""
    specs = []
    for batch in (4,) if smoke else (128, 512):
        for mode in MODES:
            if smoke:
                case = Case(mode=mode, batch=batch, height=32, width=32, num_scales=2, size=4)
            else:
                case = Case(mode=mode, batch=batch, height=128, width=128, num_scales=4, size=12)
            hyper = (case.size, case.num_scales, case.scale_factor, case.mode, None)
            sides = scale_sides(case.size, case.num_scales, case.scale_factor, None)
            boxes = [(side, side, case.size * case.size) for side in sides]
            names = implementations(case, full=False)
            peers = [n for n in PEER_ORDER if n in names] + [
                n for n in names if n not in (*PEER_ORDER, FUSED, FUSED_COMPILED)
            ]
            images, locations = case.inputs(device)
            for kind in ("fwd", "fwdbwd"):

                def impl(name: str, graph: bool = False, shown: str | None = None, hyper=hyper, timed=True) -> Impl:
                    fn = implementation(name)
                    grads = 2 if name in (FUSED, FUSED_COMPILED) or PEERS[name].location_grad else 1
                    forward = lambda i, loc, fn=fn: fn(i, loc, *hyper)  # noqa: E731
                    return Impl(shown or name, forward, grads, name in EXACT, graph, timed)

                hbm_ms, launch_ms, kernel_ms = floors(
                    ceilings, floor_bytes(kind, mode, 3, case.height, case.width, [boxes] * batch), kind
                )
                label = f"{kind} {mode} B{batch}"
                impls = [impl(FUSED), impl(FUSED, graph=True, shown=FUSED_GRAPH), *[impl(n) for n in peers]]
                spec = Spec(label, kind, (images, locations), impls, hbm_ms, launch_ms, kernel_ms)
                compiled = None
                if FUSED_COMPILED in names:

                    def compiled(spec=spec, impl=impl) -> Spec:
                        impls = [impl(FUSED, timed=False), impl(FUSED_COMPILED)]
                        return Spec(
                            spec.label, spec.kind, spec.inputs, impls, spec.hbm_ms, spec.launch_ms, spec.kernel_ms
                        )

                specs.append((spec, compiled))
    return specs


# --------------------------------------------------------------------------------------------------- box


def box_roi_align(images, centres, sides, size: int, mode: str) -> torch.Tensor:
    """Fallback peer (the box suite not importable): ``torchvision.ops.roi_align`` over all B*K boxes,
    ``aligned=True``; one sample per cell for bilinear, adaptive for area. (B, K, C, size, size)."""
    from torchvision.ops import roi_align

    batch, channels, height, width = images.shape
    count = centres.shape[1]
    centre_x = (centres[..., 0] + 1) * (width / 2)
    centre_y = (centres[..., 1] + 1) * (height / 2)
    half = sides / 2
    index = torch.arange(batch, dtype=images.dtype, device=images.device)[:, None].expand(batch, count)
    boxes = torch.stack([index, centre_x - half, centre_y - half, centre_x + half, centre_y + half], dim=-1)
    out = roi_align(
        images,
        boxes.reshape(batch * count, 5).to(images.dtype),
        (size, size),
        spatial_scale=1.0,
        sampling_ratio=1 if mode == "bilinear" else -1,
        aligned=True,
    )
    return out.reshape(batch, count, channels, size, size)


def box_grid_sample(images, centres, sides, size: int, mode: str) -> torch.Tensor:
    """Fallback peer (bilinear): one ``affine_grid`` for every box and one ``grid_sample``, the boxes' grids
    stacked along the output height; differentiable to images, centres and sides. (B, K, C, size, size)."""
    if mode != "bilinear":
        raise ValueError("grid_sample is bilinear only")
    batch, channels, height, width = images.shape
    count = centres.shape[1]
    zeros = torch.zeros_like(sides)
    theta = torch.stack(
        [
            torch.stack([sides / width, zeros, centres[..., 0]], dim=-1),
            torch.stack([zeros, sides / height, centres[..., 1]], dim=-1),
        ],
        dim=-2,
    ).to(images.dtype)  # (B, K, 2, 3)
    grid = F.affine_grid(theta.reshape(batch * count, 2, 3), [batch * count, 1, size, size], align_corners=False)
    grid = grid.reshape(batch, count * size, size, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(batch, channels, count, size, size).transpose(1, 2)


def box_sample_sides(sides: torch.Tensor, cells: int) -> list[list[tuple[float, float, int]]]:
    """Per sample, its boxes as (width, height, output cells), from sides (B, K) or (B, K, 2)."""
    pairs = sides[..., None].expand(*sides.shape, 2) if sides.dim() == 2 else sides
    return [[(w, h, cells) for w, h in sample] for sample in pairs.tolist()]


def box_specs_from_suite(device, ceilings: Ceilings, smoke: bool) -> list[tuple[Spec, Callable[[], Spec] | None]]:
    """The box suite's default cases (``benchmarks/box_cases.py``: TNet's 3x3 grid of 256-px cells on 32 images
    of 3x512x512, K = 2, 4, 9, to 64 and 128) with its peers (``benchmarks/box_peers.py``)."""
    from dataclasses import replace

    from benchmarks import box_cases
    from benchmarks.box_peers import BOX_PEERS, Boxes

    specs = []
    for mode in MODES:
        chosen = box_cases.tnet_cases(mode)
        if smoke:  # tiny images, one output size
            small = [replace(case, batch=2, height=64, width=64, side=32, size=8) for case in chosen]
            chosen = list(dict.fromkeys(small))
        for case in chosen:
            names = box_cases.implementations(case, full=False)
            order = [FUSED] + [n for n in names if n not in (FUSED, FUSED_COMPILED)]
            images, boxes = case.inputs(device)
            for kind in ("fwd", "fwdbwd"):

                def impl(
                    name: str, graph: bool = False, shown: str | None = None, case=case, boxes=boxes, timed=True
                ) -> Impl:
                    if name == FUSED_COMPILED:
                        torch.compiler.reset()
                        op = torch.compile(gdram_ext.box_glimpse, fullgraph=True, dynamic=False)

                        def forward(i, c, s, op=op, case=case):
                            return op(i, c, s, case.size, case.mode)

                        return Impl(name, forward, 3, True)
                    peer = BOX_PEERS[name]

                    def forward(i, c, s, peer=peer, case=case, boxes=boxes):
                        return peer.fn(i, Boxes(c, s, boxes.cells, boxes.grid), case.size, case.mode)

                    exact = box_cases.exact(name, case)
                    return Impl(shown or name, forward, 3 if peer.box_grad else 1, exact, graph, timed)

                samples = box_sample_sides(boxes.sides, case.size * case.size)
                nbytes = floor_bytes(kind, mode, case.channels, case.height, case.width, samples)
                hbm_ms, launch_ms, kernel_ms = floors(ceilings, nbytes, kind)
                where = (
                    f"cells {case.side}" if case.placement == box_cases.GRID else f"boxes {case.side // 2}-{case.side}"
                )
                label = f"{kind} {mode} K{case.boxes} {where} out{case.size}"
                impls = [impl(FUSED), impl(FUSED, graph=True, shown=FUSED_GRAPH), *[impl(n) for n in order[1:]]]
                spec = Spec(label, kind, (images, boxes.centres, boxes.sides), impls, hbm_ms, launch_ms, kernel_ms)
                compiled = None
                if FUSED_COMPILED in names:

                    def compiled(spec=spec, impl=impl) -> Spec:
                        impls = [impl(FUSED, timed=False), impl(FUSED_COMPILED)]
                        return Spec(
                            spec.label, spec.kind, spec.inputs, impls, spec.hbm_ms, spec.launch_ms, spec.kernel_ms
                        )

                specs.append((spec, compiled))
    return specs


def box_specs_fallback(device, ceilings: Ceilings, smoke: bool) -> list[tuple[Spec, None]]:
    """Without the box suite: 32 images of 3x512x512, K = 2, 4, 9 random square boxes of 128-256 px inside the
    image, to 64 and 128, against roi_align and affine_grid + grid_sample."""
    batch, side, counts, sizes, low, high = (
        (2, 64, (2,), (8,), 16, 32) if smoke else (32, 512, (2, 4, 9), (64, 128), 128, 256)
    )
    specs = []
    for count in counts:
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(batch, 3, side, side, generator=generator).to(device)
        sides = torch.rand(batch, count, generator=generator) * (high - low) + low
        centres = (torch.rand(batch, count, 2, generator=generator) * 2 - 1) * (1 - sides / side)[..., None]
        centres, sides = centres.to(device), sides.to(device)
        for size in sizes:
            for mode in MODES:
                for kind in ("fwd", "fwdbwd"):
                    fused = Impl(
                        FUSED, lambda i, c, s, size=size, mode=mode: gdram_ext.box_glimpse(i, c, s, size, mode), 3, True
                    )
                    impls = [fused, Impl(FUSED_GRAPH, fused.forward, 3, True, graph=True)]
                    impls.append(
                        Impl(
                            "roi_align",
                            lambda i, c, s, size=size, mode=mode: box_roi_align(i, c, s, size, mode),
                            1,
                            mode == "bilinear",
                        )
                    )
                    if mode == "bilinear":
                        impls.append(
                            Impl(
                                "affine_grid+grid_sample",
                                lambda i, c, s, size=size: box_grid_sample(i, c, s, size, "bilinear"),
                                3,
                                True,
                            )
                        )
                    nbytes = floor_bytes(kind, mode, 3, side, side, box_sample_sides(sides, size * size))
                    hbm_ms, launch_ms, kernel_ms = floors(ceilings, nbytes, kind)
                    label = f"{kind} {mode} K{count} boxes {low}-{high} out{size}"
                    specs.append(
                        (Spec(label, kind, (images, centres, sides), impls, hbm_ms, launch_ms, kernel_ms), None)
                    )
    return specs


# -------------------------------------------------------------------------------------------------- main


def run_section(report: Report, title: str, specs, device, budget: Budget, deadline: float, fused_times: dict) -> list:
    """Time and write every spec of a section until ``deadline``; returns the compiled-op builders to run later."""
    report.line(title)
    report.line()
    report.table(HEADER)
    later = []
    for spec, compiled in specs:
        if budget.elapsed() > deadline:
            report.row([spec.label, "all", "skipped: budget spent", *[""] * 6])
            continue
        report.progress(f"{title.removeprefix('## ')}: {spec.label}")
        try:
            fused_times[spec.label] = emit(report, spec, measure(spec, device, budget, deadline))
        except Exception as error:  # the fused op itself failed on the case: the others go on
            traceback.print_exc()
            report.row([spec.label, FUSED, f"FAILED: {first_line(error)}", *[""] * 6])
            continue
        if compiled is not None:
            later.append(compiled)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.line()
    return later


def main(argv: list[str] | None = None) -> int:
    """Measure the ceilings, then the retina's and the box op's tables, then the compiled op, into ``--out``."""
    args = common_arguments(__doc__.splitlines()[0]).parse_args(argv)
    budget = Budget(args.budget)
    device = pick_device(args.device)
    smoke = smoke_run(args, device)
    torch.manual_seed(0)
    report = Report(args.out)
    report.line("# Operators on the GPU" + (" (SMOKE RUN: tiny shapes)" if smoke else ""))
    report.line()
    for line in environment_lines(device):
        report.line(line)
    ceilings = measure_ceilings(device)
    for line in describe_ceilings(ceilings):
        report.line(line)
    clock = "CUDA events" if device.type == "cuda" else "perf_counter"
    report.line(f"- timing: {clock} per call, median after warm-up; budget {args.budget:.0f} s")
    report.line(
        "- `x fused`: median over the fused op's eager median (> 1: the fused op is faster). `/ floor`: median over "
        "max(HBM floor, launch floor); for the CUDA-graph replay over max(HBM floor, its kernels (1 forward, 2 "
        "forward + backward) x an empty kernel's time). `max abs diff`: against the fused op's forward output "
        "(`approx`: a peer that computes another function on the case). HBM floor: output written + the input "
        "pixels the samples need read once (+ backward: output gradient read, taps read again, dense image "
        "gradient written) over the measured copy bandwidth."
    )
    report.line()
    has_box = hasattr(gdram_ext, "box_glimpse")
    fused_times: dict[str, float] = {}
    later = []
    try:
        title = "## retina_glimpse: 3x128x128, 4 scales of 12x12 (factor 2), float32"
        specs = retina_specs(device, ceilings, smoke)
        later += run_section(
            report, title, specs, device, budget, args.budget * (0.45 if has_box else 0.8), fused_times
        )
    except Exception:
        traceback.print_exc()
        report.line("retina section FAILED (traceback in bench.log)")
    if not has_box:
        report.line("## box_glimpse: not in this gdram_ext (skipped)")
        report.line()
    else:
        try:
            try:
                specs, source = box_specs_from_suite(device, ceilings, smoke), "the box suite's cases and peers"
            except Exception as error:
                traceback.print_exc()
                specs, source = (
                    box_specs_fallback(device, ceilings, smoke),
                    f"fallback cases (suite: {first_line(error)})",
                )
            title = f"## box_glimpse: {source}, float32"
            later += run_section(report, title, specs, device, budget, args.budget * 0.8, fused_times)
        except Exception:
            traceback.print_exc()
            report.line("box section FAILED (traceback in bench.log)")
    if later:
        report.line("## torch.compile(fullgraph=True) of the fused op (headline cases; `x fused`: over its eager time)")
        report.line()
        report.table(HEADER)
        for build in later:
            if budget.left() < 15:
                report.line("(the rest skipped: under 15 s of budget left)")
                break
            try:
                spec = build()
                report.progress(f"torch.compile: {spec.label}")
                emit(report, spec, measure(spec, device, Budget(math.inf), math.inf), fused_times.get(spec.label))
            except Exception as error:
                traceback.print_exc()
                report.line(f"compiled case FAILED: {first_line(error)}")
        report.line()
    report.line(f"_operators: {budget.elapsed():.0f} s_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
