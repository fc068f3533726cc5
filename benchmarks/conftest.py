"""Suite-wide setup: the ``--full`` sweep switch, CPU thread pinning, devices and machine info.

* ``--full`` (or ``GDRAM_BENCH_FULL=1``): run the full sweeps instead of the default selection.
* ``GDRAM_BENCH_THREADS=N``: pin torch to N CPU threads (default: every core this process may use);
  the count is recorded in every benchmark's ``extra_info`` and in the JSON's ``machine_info``.
* The suite refuses to run unless ``gdram_ext`` loaded its compiled kernels (see :func:`require_compiled`);
  the backend, its kernels and the package folder are recorded like the thread count.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.harness import FULL_ENV, backend_info, bench_threads, cpu_model, full_sweep, gpu_name, require_compiled


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
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each device a benchmark runs on: the CPU, and CUDA where a GPU is present (skipped otherwise);
    the same fixture as the tests' (``tests/conftest.py``)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return torch.device(request.param)


@pytest.fixture
def extra_info(device: torch.device) -> dict[str, object]:
    """What every benchmark records besides its case: device, threads, GPU name, torch version."""
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "gpu": gpu_name() if device.type == "cuda" else "none",
        "torch": torch.__version__,
        **backend_info(),
    }
