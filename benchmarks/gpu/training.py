"""Step 3 of the GPU run: GDRAM's training step and its batch-1 inference latency on CUDA.

The step is the end-to-end benchmark's (``benchmarks/test_bench_end_to_end.py``): the paper's model
(``GDRAMConfig()``: 128x128 RGB, T = 8 glimpses of 4 scales of 12) from seeded weights, zero grads,
forward, hybrid loss, backward, Adam step, on a fixed batch. Its retina is the fused op, or peer 2
(``grid_sample_per_scale``: per-scale ``affine_grid`` + ``grid_sample`` + ``cat``, the published Gaussian-RAM
retina) swapped in with the end-to-end benchmark's ``PeerRetina``: "published" below is that step, eager,
as the published implementation runs.

Executions, at batch 128 and 512:

* eager: the step as written;
* CUDA graph: the whole step (forward, loss, backward, ``Adam(capturable=True)``) captured once with
  ``torch.cuda.graph`` and replayed;
* torch.compile: ``torch.compile(model, mode="reduce-overhead")`` (what ``TrainSettings(compile=True)`` does
  on CUDA: inductor + CUDA graphs for the model's forward and backward; loss and Adam eager), fused retina only,
  last because its compilation may not fit the budget.

Floor: the step's FLOPs (``torch.utils.flop_counter`` on one eager step) over the measured fp32 and tf32
matrix-product rates (cuDNN runs the convolutions in tf32 by default; the linear layers run in fp32).
Inference: batch 1, eval mode, ``no_grad``, wall-clock latency per call (perf_counter around the call and a
synchronisation); GDRAM (``fast=False``) eager and from a CUDA graph, F-GDRAM (``fast=True``, early stopping,
one host sync per step from t = 2, so eager only). The paper: 33 ms (GDRAM) and 19 ms (F-GDRAM) on an
RTX 2080 Ti; the issue's target is <= 1 ms on an H100.

``python3 benchmarks/gpu/training.py --out training.md [--budget 120] [--device auto] [--smoke]``
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from gpubench import (
    Budget,
    Report,
    Timing,
    common_arguments,
    cuda_graph,
    environment_lines,
    fmt_ms,
    pick_device,
    smoke_run,
    time_calls,
)
from torch import nn

from benchmarks.cases import EXACT, FUSED
from benchmarks.peers import PEERS

if TYPE_CHECKING:
    from gdram import GDRAMConfig

# `gdram` is imported inside the functions: a module-level import would sort above `gpubench`, which puts the
# checkout's python/ folder on sys.path (the fallback where the package is not installed).
PUBLISHED = "grid_sample_per_scale"
NAMES = {FUSED: "fused", PUBLISHED: "published (per-scale grid_sample)"}


def peer_retina_class() -> type[nn.Module]:
    """The end-to-end benchmark's ``PeerRetina`` (a peer glimpse function as a ``RetinaGlimpse``)."""
    from benchmarks.test_bench_end_to_end import PeerRetina

    return PeerRetina


def build(retina: str, device: torch.device, config: GDRAMConfig) -> nn.Module:
    """The model from seeded weights (the same for every retina) with the named retina, on ``device``."""
    from gdram import create_model

    torch.manual_seed(0)
    model = create_model(config).to(device)
    if retina != FUSED:
        model.retina = peer_retina_class()(PEERS[retina].fn, model.retina, retina in EXACT)
    return model


def data(config: GDRAMConfig, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded images (B, C, H, W) in [0, 1) and labels (B,)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, config.in_channels, *config.image_hw, generator=generator)
    labels = torch.randint(0, config.num_classes, (batch,), generator=generator)
    return images.to(device), labels.to(device)


def eager_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """The end-to-end benchmark's training step, eager, with the default Adam."""
    from gdram import hybrid_loss

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        hybrid_loss(model(images), labels).total.backward()
        optimizer.step()

    return step


def graphed_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """The whole step captured in one CUDA graph (``Adam(capturable=True)``; grads allocated in the capture,
    overwritten by every replay): returns the replay."""
    from gdram import hybrid_loss

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)

    def warm() -> None:
        optimizer.zero_grad(set_to_none=True)
        hybrid_loss(model(images), labels).total.backward()
        optimizer.step()

    stream = torch.cuda.Stream(images.device)
    stream.wait_stream(torch.cuda.current_stream(images.device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            warm()
    torch.cuda.current_stream(images.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        hybrid_loss(model(images), labels).total.backward()
        optimizer.step()
    torch.cuda.synchronize(images.device)
    return graph.replay


def compiled_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """``TrainSettings(compile=True)``'s step: the model under ``torch.compile`` (``reduce-overhead`` on CUDA),
    the loss and Adam eager."""
    from gdram import hybrid_loss

    model.train()
    mode = "reduce-overhead" if images.device.type == "cuda" else "default"
    compiled = torch.compile(model, mode=mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        hybrid_loss(compiled(images), labels).total.backward()
        optimizer.step()

    return step


def matmul_rates(device: torch.device, smoke: bool) -> tuple[float, float]:
    """Measured FLOP/s of a square float32 matrix product: (fp32, tf32)."""
    n = 512 if smoke else 8192
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    rates = []
    previous = torch.backends.cuda.matmul.allow_tf32
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            timing = time_calls(lambda: a @ b, device, warmup=3, iters=10, target_seconds=0.5)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        rates.append(2 * n**3 / (timing.median / 1e3))
    return rates[0], rates[1]


def step_flops(step: Callable[[], None]) -> float:
    """FLOPs of one call of ``step`` (matrix products and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


class StepTable:
    """The training-step table: the ceilings, the step's FLOPs, then one row per (batch, retina, execution)."""

    def __init__(self, report: Report, device: torch.device, config: GDRAMConfig, batches: tuple[int, ...]) -> None:
        self.report, self.device, self.config, self.batches = report, device, config, batches
        self.fp32, self.tf32 = matmul_rates(device, batches[0] < 128)
        report.line(f"- matrix product, float32: {self.fp32 / 1e12:.1f} TFLOP/s (fp32), {self.tf32 / 1e12:.1f} (tf32)")
        images, labels = data(config, batches[0], device)
        self.flops = step_flops(eager_step(build(FUSED, device, config), images, labels)) / batches[0]
        report.line(
            f"- one training step: {self.flops * batches[0] / 1e9:.1f} GFLOP at batch {batches[0]} (flop counter)"
        )
        report.line()
        report.line(
            "`x published`: images/s over the published step's (eager, per-scale grid_sample retina) at the same "
            "batch. Floor: FLOPs / tf32 rate (FLOPs / fp32 rate in brackets)."
        )
        report.line()
        report.table(["batch", "retina", "execution", "ms / step", "images/s", "x published", "floor ms", "/ floor"])
        self.published: dict[int, float] = {}
        self.compile_seconds = 60.0  # a first guess of one compilation; the measured one replaces it

    def run(self, batch: int, retina: str, execution: str, budget: Budget, iters: int) -> None:
        """Time one (batch, retina, execution) and write its row (or why it has none)."""
        device, report = self.device, self.report
        label = [str(batch), NAMES[retina], execution]
        if execution == "CUDA graph" and device.type != "cuda":
            return
        need = self.compile_seconds + 10 if execution == "torch.compile" else 5
        if budget.left() < need:
            report.row([*label, f"skipped: {budget.left():.0f} s of budget left, needs ~{need:.0f}", "", "", "", ""])
            return
        report.progress(f"training step: batch {batch}, {NAMES[retina]}, {execution}")
        flops = self.flops * batch
        floor_ms = flops / self.tf32 * 1e3
        compiled_in = ""
        try:
            images, labels = data(self.config, batch, device)
            model = build(retina, device, self.config)
            if execution == "eager":
                run = eager_step(model, images, labels)
            elif execution == "CUDA graph":
                run = graphed_step(model, images, labels)
            else:
                report.progress(f"torch.compile at batch {batch}: compiling (the time limit may end it here)")
                started = time.perf_counter()
                run = compiled_step(model, images, labels)
                run()  # the compilation
                self.compile_seconds = time.perf_counter() - started
                compiled_in = f" (compiled in {self.compile_seconds:.0f} s)"
            timing = time_calls(run, device, warmup=3, iters=iters, target_seconds=1.0)
        except Exception as error:
            traceback.print_exc()
            report.row([*label, f"FAILED: {type(error).__name__}: {str(error).splitlines()[0][:150]}", "", "", "", ""])
            return
        finally:
            if execution == "torch.compile":
                torch.compiler.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        per_second = batch / (timing.median / 1e3)
        if retina == PUBLISHED and execution == "eager":
            self.published[batch] = per_second
        ratio = f"{per_second / self.published[batch]:.2f}" if batch in self.published else "-"
        report.row(
            [
                *label,
                f"{fmt_ms(timing.median)} (min {fmt_ms(timing.minimum)}){compiled_in}",
                f"{per_second:.0f}",
                ratio,
                f"{fmt_ms(floor_ms)} ({fmt_ms(flops / self.fp32 * 1e3)})",
                f"{timing.median / floor_ms:.1f}",
            ]
        )


def inference_section(report: Report, device: torch.device, config: GDRAMConfig, budget: Budget) -> None:
    """Batch-1 latency: GDRAM and F-GDRAM, fused and published retinas, eager; GDRAM from a CUDA graph and under
    ``torch.compile(mode="reduce-overhead")`` (inductor's fused kernels replayed from CUDA graphs) if time is left."""
    report.table(["model", "retina", "execution", "latency ms (wall clock)", "glimpses used"])
    images, _ = data(config, 1, device)
    plan = [(fast, retina, "eager") for retina in (FUSED, PUBLISHED) for fast in (False, True)]
    plan += [(False, FUSED, "CUDA graph"), (False, FUSED, "torch.compile")]
    for fast, retina, execution in plan:
        label = ["F-GDRAM" if fast else "GDRAM", NAMES[retina], execution]
        if execution != "eager" and device.type != "cuda":
            continue
        if budget.left() < (70 if execution == "torch.compile" else 3):
            report.row([*label, "skipped: budget spent", ""])
            continue
        report.progress(f"inference: {' '.join(label)}")
        try:
            model = build(retina, device, config).eval()
            with torch.no_grad():
                used = model(images, fast=fast).glimpses_used.float().mean().item()

            forward = torch.compile(model, mode="reduce-overhead") if execution == "torch.compile" else model

            def infer(forward: nn.Module = forward, fast: bool = fast) -> None:
                with torch.no_grad():
                    forward(images, fast=fast)

            run = cuda_graph(infer, device) if execution == "CUDA graph" else infer
            timing: Timing = time_calls(run, device, warmup=5, iters=50, target_seconds=0.5, wall_clock=True)
        except Exception as error:
            traceback.print_exc()
            report.row([*label, f"FAILED: {type(error).__name__}: {str(error).splitlines()[0][:150]}", ""])
            continue
        report.row([*label, f"{fmt_ms(timing.median)} (min {fmt_ms(timing.minimum)})", f"{used:.1f}"])
    report.line()
    report.line("Paper: 33 ms (GDRAM), 19 ms (F-GDRAM) on an RTX 2080 Ti; target <= 1 ms on an H100.")
    report.line()


def main(argv: list[str] | None = None) -> int:
    """Training step eager and graphed, the inference latencies, then the compiled step, into ``--out``.

    The compilations come last: they are the slowest and least certain part, and the time limit may end them."""
    parser = common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--compile-on-cpu", action="store_true", help="also the torch.compile rows on the CPU")
    args = parser.parse_args(argv)
    budget = Budget(args.budget)
    device = pick_device(args.device)
    smoke = smoke_run(args, device)
    from gdram import GDRAMConfig

    config = GDRAMConfig()
    batches = (4, 8) if smoke else (128, 512)
    iters = 5 if smoke else 20
    report = Report(args.out)
    report.line("# GDRAM on the GPU" + (" (SMOKE RUN: tiny batches)" if smoke else ""))
    report.line()
    for line in environment_lines(device):
        report.line(line)
    report.line(
        f"- cuDNN tf32: {torch.backends.cudnn.allow_tf32}, matmul tf32: {torch.backends.cuda.matmul.allow_tf32}"
    )
    report.line(f"- budget {args.budget:.0f} s")
    report.line()
    report.line("## Training step (zero grads, forward, hybrid loss, backward, Adam), paper's model, float32")
    report.line()
    table = None
    # keep ~15 s for the inference latencies before the compilations
    before_inference = Budget(max(args.budget - (2.0 if smoke else 15.0), 1.0))
    try:
        table = StepTable(report, device, config, batches)
        for batch in batches:
            for execution in ("eager", "CUDA graph"):
                for retina in (PUBLISHED, FUSED):
                    table.run(batch, retina, execution, before_inference, iters)
    except Exception:
        traceback.print_exc()
        report.line("training section FAILED (traceback in bench.log)")
    report.line()
    report.line("## Inference, batch 1 (eval, no_grad)")
    report.line()
    try:
        inference_section(report, device, config, budget)
    except Exception:
        traceback.print_exc()
        report.line("inference section FAILED (traceback in bench.log)")
    if table is not None and (device.type == "cuda" or args.compile_on_cpu):
        report.line("## Training step under torch.compile (mode reduce-overhead on CUDA), fused retina")
        report.line()
        report.table(["batch", "retina", "execution", "ms / step", "images/s", "x published", "floor ms", "/ floor"])
        for batch in batches:
            table.run(batch, FUSED, "torch.compile", budget, iters)
        report.line()
    report.line(f"_training: {budget.elapsed():.0f} s_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
