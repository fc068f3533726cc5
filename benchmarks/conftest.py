"""Suite-wide setup: the ``--full`` sweep switch, CPU thread pinning, devices and machine info.

* ``--full`` (or ``GDRAM_BENCH_FULL=1``): run the full sweeps instead of the default selection.
* ``GDRAM_BENCH_THREADS=N``: pin torch to N CPU threads (default: every core this process may use);
  the count is recorded in every benchmark's ``extra_info`` and in the JSON's ``machine_info``.
* The suite refuses to run unless ``gdram_ext`` loaded its compiled kernels (see :func:`require_compiled`);
  the backend, its kernels and the package folder are recorded like the thread count.
"""

from __future__ import annotations

import os
import platform

import pytest
import torch

from benchmarks.harness import backend_info, bench_threads, require_compiled

FULL_ENV = "GDRAM_BENCH_FULL"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help=f"run the full benchmark sweeps (also: {FULL_ENV}=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    try:
        require_compiled()
    except RuntimeError as error:
        raise pytest.UsageError(str(error)) from None
    torch.set_num_threads(bench_threads())


def pytest_report_header(config: pytest.Config) -> str:
    return f"gdram_ext: {backend_info()}"


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


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, object]) -> None:
    machine_info["gdram"] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "gpu": gpu_name(),
        **backend_info(),
        "load_average_at_save": os.getloadavg(),
        "full_sweep": full_sweep(config),
    }


@pytest.fixture(params=["cpu", "cuda"])
def device(request: pytest.FixtureRequest) -> str:
    """Each device a benchmark runs on: the CPU, and CUDA where a GPU is present (skipped otherwise)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return request.param


@pytest.fixture
def extra_info(device: str) -> dict[str, object]:
    """What every benchmark records besides its case: device, threads, GPU name, torch version."""
    return {
        "device": device,
        "threads": torch.get_num_threads(),
        "gpu": gpu_name() if device == "cuda" else "none",
        "torch": torch.__version__,
        **backend_info(),
    }
