"""What a benchmark times and measures: implementations by name, synchronised calls, memory, and
what the suite records about its run (sweep, threads, machine, backend).

GPU calls are followed by ``torch.cuda.synchronize()`` inside the timed function, so that the
clock pytest-benchmark reads after a call includes the kernels it launched; every timed function
is warmed up (compilation, allocator, first-call dispatch) before the clock starts.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import gdram_ext
from benchmarks.cases import FUSED_COMPILED
from benchmarks.peers import PEERS, GlimpseFn
from gdram_ext import retina_glimpse

WARMUP_CALLS = 3
THREADS_ENV = "GDRAM_BENCH_THREADS"
FULL_ENV = "GDRAM_BENCH_FULL"


def bench_threads() -> int:
    """CPU threads the suite pins torch to: ``$GDRAM_BENCH_THREADS``, else every core this process may use."""
    return int(os.environ.get(THREADS_ENV, len(os.sched_getaffinity(0))))


def full_sweep(config: pytest.Config) -> bool:
    """Whether the full sweeps were asked for, by ``--full`` or ``GDRAM_BENCH_FULL=1``."""
    return bool(config.getoption("full")) or os.environ.get(FULL_ENV, "") not in ("", "0")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    """The CUDA device's name, or ``"none"``."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "none"


def backend_info() -> dict[str, object]:
    """What runs the fused op: ``{"backend": "compiled", "kernels": ["cpu", "cuda"], "package": folder}``."""
    active = gdram_ext.backend()
    return {"backend": active.name, "kernels": list(active.kernels), "package": str(Path(gdram_ext.__file__).parent)}


def require_compiled() -> None:
    """Raise a ``RuntimeError`` that says how to fix the install unless ``gdram_ext`` runs its compiled
    kernels: timing the pure-PyTorch reference as the "fused" op would publish meaningless ratios."""
    active = gdram_ext.backend()
    if active.name == "compiled":
        return
    raise RuntimeError(
        f"gdram_ext backend is {active.name!r} (imported from {Path(gdram_ext.__file__).parent}): the benchmarks "
        "time only the compiled kernels. Install them into this Python with "
        "`pip install -r requirements.txt && pip install --no-build-isolation .` (or build in place with "
        "`python setup.py build_ext --inplace`), check with "
        '`python -c "import gdram_ext; print(gdram_ext.backend())"`, and see the warning that '
        "`import gdram_ext` printed for the cause."
    )


def implementation(name: str) -> GlimpseFn:
    """The glimpse function of a peer of :data:`benchmarks.peers.PEERS`, or ``fused_compiled``:
    the fused op under ``torch.compile`` (a fresh compilation, so that the recompilation limit
    never sends a case back to eager)."""
    if name == FUSED_COMPILED:
        torch.compiler.reset()
        return torch.compile(retina_glimpse, fullgraph=True, dynamic=False)
    return PEERS[name].fn


def synchronised(call: Callable[[], object], device: torch.device, warmup: int = WARMUP_CALLS) -> Callable[[], None]:
    """``call`` followed by a device synchronisation on CUDA, already called ``warmup`` times."""

    def run() -> None:
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        run()
    return run


def retained_bytes(forward: Callable[[], torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> int:
    """Bytes that a forward keeps alive until its backward: the output plus every tensor saved for
    backward (each storage counted once), leaving out the inputs' own storages (CPU measure)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = forward()
    storages[output.untyped_storage().data_ptr()] = output.untyped_storage().nbytes()
    for tensor in inputs:
        storages.pop(tensor.untyped_storage().data_ptr(), None)
    return sum(storages.values())


def peak_cuda_bytes(run: Callable[[], None]) -> int:
    """Peak CUDA memory allocated by ``run`` above what was allocated before it (GPU measure)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before
