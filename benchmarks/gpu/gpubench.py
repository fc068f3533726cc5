"""Shared helpers of the GPU run's scripts (``benchmarks/gpu/run.sh``): imports, device, timing, ceilings, reports.

The scripts run as files (``python3 benchmarks/gpu/operators.py``) from any folder. Importing this module puts
the checkout's root and its ``python/`` folder at the END of ``sys.path``: an installed ``gdram_ext`` (the one
with the compiled kernels, in site-packages) wins over the checkout's source folder, which is only the fallback
(the pure-PyTorch reference backend, said so in every report) where the install failed. ``gdram_ext`` is
imported here, before the ``benchmarks`` package, whose ``__init__`` takes the root off ``sys.path``.

Timing on CUDA: CUDA events around every call, the median of the timed calls after warm-up calls; calls are
queued back to back, so a call that the CPU launches slower than the GPU runs it is timed at its launch rate
(what eager code gets). On the CPU (smoke runs only): ``time.perf_counter`` per call.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _entry in (ROOT, ROOT / "python"):
    if str(_entry) not in sys.path:
        sys.path.append(str(_entry))

import torch  # noqa: E402

import gdram_ext  # noqa: E402  (before `benchmarks`: see the module's docstring)


def common_arguments(description: str) -> argparse.ArgumentParser:
    """The arguments every GPU script takes: ``--out`` (markdown file), ``--budget`` (seconds),
    ``--device`` (``auto``: CUDA when present, else the CPU with a warning) and ``--smoke`` (tiny shapes;
    implied on the CPU unless ``--full-size``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="markdown report to write (appended line by line)")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds; no new measurement starts after it")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and few calls (a logic check)")
    parser.add_argument("--full-size", action="store_true", help="the real shapes even on the CPU (slow)")
    return parser


def pick_device(name: str) -> torch.device:
    """``name`` as a device; ``auto`` is CUDA when available, else the CPU with a warning."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        warnings.warn("no CUDA device: running on the CPU (smoke run)", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available")
    return device


def smoke_run(args: argparse.Namespace, device: torch.device) -> bool:
    """Whether to run the tiny shapes: ``--smoke``, or the CPU without ``--full-size``."""
    return bool(args.smoke or (device.type == "cpu" and not args.full_size))


class Budget:
    """Seconds left of a script's ``--budget``, counted from its creation."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left (negative once spent)."""
        return self.seconds - self.elapsed()


class Report:
    """A markdown file written line by line (flushed at once, so a run killed by its time limit keeps what
    it measured). Progress goes to stdout through :meth:`progress`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("w", encoding="utf-8")
        self.start = time.perf_counter()

    def line(self, text: str = "") -> None:
        """Write ``text`` and a newline."""
        self.file.write(text + "\n")
        self.file.flush()

    def progress(self, text: str) -> None:
        """A progress line on stdout (the run's log), stamped with the seconds since the report began."""
        print(f"[{time.perf_counter() - self.start:6.1f}s] {text}", flush=True)

    def table(self, header: list[str]) -> None:
        """Start a table with these column names."""
        self.line("| " + " | ".join(header) + " |")
        self.line("|" + "|".join(" --- " for _ in header) + "|")

    def row(self, cells: list[object]) -> None:
        """One table row."""
        self.line("| " + " | ".join(str(cell) for cell in cells) + " |")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (nothing on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call: median and minimum over ``calls`` timed calls."""

    median: float
    minimum: float
    calls: int

    def __str__(self) -> str:
        return f"{fmt_ms(self.median)} (min {fmt_ms(self.minimum)}, n={self.calls})"


def fmt_ms(ms: float) -> str:
    """Milliseconds with 3 significant digits (``nan`` as ``-``)."""
    if ms != ms:
        return "-"
    return f"{ms:.3g}" if ms >= 0.01 else f"{ms:.2e}"


def time_calls(
    call: Callable[[], object],
    device: torch.device,
    warmup: int = 5,
    iters: int = 20,
    target_seconds: float = 0.5,
    wall_clock: bool = False,
) -> Timing:
    """Time ``call`` after ``warmup`` calls: ``iters`` timed calls, fewer (at least 3) when they would take
    longer than ``target_seconds``; the warm-up also shrinks (to 1) for calls slower than 0.1 s.

    CUDA: an event pair around each call, read after the last. ``wall_clock``: ``perf_counter`` around
    each call followed by a synchronisation instead (a latency as a user sees it).
    """
    start = time.perf_counter()
    call()  # first call: compilation, allocator, lazy module loading
    synchronize(device)
    first = time.perf_counter() - start
    warmup = 1 if first > 0.1 else warmup
    start = time.perf_counter()
    for _ in range(max(warmup - 1, 0)):
        call()
    synchronize(device)
    per_call = (time.perf_counter() - start) / max(warmup - 1, 1) if warmup > 1 else first
    iters = max(3, min(iters, int(target_seconds / max(per_call, 1e-6))))
    if device.type == "cuda" and not wall_clock:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for begin, end in zip(starts, ends, strict=True):
            begin.record()
            call()
            end.record()
        torch.cuda.synchronize(device)
        times = [begin.elapsed_time(end) for begin, end in zip(starts, ends, strict=True)]
    else:
        times = []
        for _ in range(iters):
            begin = time.perf_counter()
            call()
            synchronize(device)
            times.append((time.perf_counter() - begin) * 1e3)
    return Timing(statistics.median(times), min(times), iters)


def cuda_graph(call: Callable[[], object], device: torch.device, warmup: int = 3) -> Callable[[], None]:
    """``call`` captured in a CUDA graph (after ``warmup`` calls on a side stream): returns the replay.

    What ``call`` allocates lives in the graph's private pool; every replay overwrites it."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            call()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    torch.cuda.synchronize(device)
    return graph.replay


@dataclass(frozen=True)
class Ceilings:
    """What the device can do at best, measured: copy bandwidth (bytes/s, read + written), the time of an
    empty kernel and of a tiny eager op (ms per call, back to back)."""

    bandwidth: float
    empty_kernel_ms: float
    tiny_op_ms: float

    def bytes_ms(self, nbytes: float) -> float:
        """Milliseconds to move ``nbytes`` at the measured bandwidth."""
        return nbytes / self.bandwidth * 1e3


def measure_ceilings(device: torch.device, copy_gib: float = 2.0) -> Ceilings:
    """Measure :class:`Ceilings`: a device-to-device copy of ``copy_gib`` GiB of random float32 (median of
    10), ``torch.cuda._sleep(0)`` (an empty kernel) and ``x.add_(1)`` on one element (median of 200 each).

    On the CPU the copy is 64 MiB and the empty kernel is the tiny op."""
    if device.type != "cuda":
        copy_gib = 1 / 16
    count = int(copy_gib * 2**30) // 4
    source = torch.empty(count, device=device).uniform_()
    target = torch.empty_like(source)
    copy = time_calls(lambda: target.copy_(source), device, warmup=3, iters=10, target_seconds=1.0)
    source.resize_(0)  # free the copy's memory before the rest of the run
    target.resize_(0)
    tiny = torch.zeros(1, device=device)
    tiny_op = time_calls(lambda: tiny.add_(1), device, warmup=20, iters=200, target_seconds=0.5)
    if device.type == "cuda":
        empty = time_calls(lambda: torch.cuda._sleep(0), device, warmup=20, iters=200, target_seconds=0.5)
    else:
        empty = tiny_op
    return Ceilings(2 * count * 4 / (copy.median / 1e3), empty.median, tiny_op.median)


def describe_ceilings(ceilings: Ceilings) -> list[str]:
    """Markdown bullet lines for the measured ceilings."""
    return [
        f"- HBM bandwidth (device-to-device copy, read + written): {ceilings.bandwidth / 1e12:.2f} TB/s",
        f"- empty kernel (`torch.cuda._sleep(0)`), back to back: {ceilings.empty_kernel_ms * 1e3:.1f} us per launch",
        f"- tiny eager op (`x.add_(1)`, 1 element), back to back: {ceilings.tiny_op_ms * 1e3:.1f} us per call",
    ]


def environment_lines(device: torch.device) -> list[str]:
    """Markdown bullet lines: device, torch, CUDA, the gdram_ext backend and where it was imported from."""
    active = gdram_ext.backend()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no CUDA device: smoke run)"
    lines = [
        f"- device: {name}",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
        f"- gdram_ext backend: {active.name}, kernels {list(active.kernels)}, from {Path(gdram_ext.__file__).parent}",
        f"- box_glimpse present: {hasattr(gdram_ext, 'box_glimpse')}",
    ]
    if active.name != "compiled" or (device.type == "cuda" and "cuda" not in active.kernels):
        lines.append(
            "- **WARNING: the compiled CUDA kernels are not what runs here; the fused figures are not the op's**"
        )
    return lines


def gflops(flops: float, ms: float) -> float:
    """GFLOP/s of ``flops`` done in ``ms`` milliseconds (nan for a zero time)."""
    return flops / (ms / 1e3) / 1e9 if ms > 0 else math.nan
