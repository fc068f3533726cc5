"""Shared, generic fixtures: reproducible seeds and the devices the tests can run on."""

from __future__ import annotations

import random

import pytest
import torch


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed Python's and torch's generators before every test, so that failures reproduce."""
    value = 0
    random.seed(value)
    torch.manual_seed(value)
    return value


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every device the tests can run on: the CPU, and CUDA where a GPU is present (skipped otherwise)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return torch.device(request.param)


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny models run faster so, and do not fight a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: the test needs a CUDA device (skipped without one)")
