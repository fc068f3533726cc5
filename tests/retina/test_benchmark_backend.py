"""The benchmarks time the compiled kernels, imported the way the README's commands import them.

``pytest benchmarks/`` and ``python -m benchmarks.report`` run from the checkout's root, which both
put on ``sys.path``; the checkout's ``gdram_ext/`` source folder (no compiled ``_C`` unless built in
place) must not shadow the installed package there. Each command runs here in a fresh interpreter
from the root, as a user runs it, and says which ``gdram_ext`` it got.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gdram_ext
from gdram_ext import backend

ROOT = Path(__file__).resolve().parents[2]
BLOCK_KERNELS = "import sys; sys.modules['gdram_ext._C'] = None; "


def run_from_root(*args: str) -> subprocess.CompletedProcess[str]:
    """``python args...`` in a fresh interpreter whose working directory is the checkout's root."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=False
    )


def reported_backend(output: str) -> dict[str, object]:
    """The ``gdram_ext: {...}`` line that the benchmark suite and ``report --check`` print."""
    lines = [line for line in output.splitlines() if line.startswith("gdram_ext: {")]
    assert lines, output
    return ast.literal_eval(lines[0].removeprefix("gdram_ext: "))


@pytest.fixture
def compiled_here() -> None:
    """The tests' own gdram_ext runs the compiled kernels (what the benchmarks need)."""
    if backend().name != "compiled":
        pytest.skip("this Python runs the reference backend: the benchmarks refuse it (tested below)")


def test_pytest_on_the_benchmarks_from_the_root_imports_the_compiled_kernels(compiled_here: None) -> None:
    # `python -m pytest` puts the root on sys.path twice over: as the working directory and as
    # the rootdir above the `benchmarks` package; the README's `pytest` does the latter.
    completed = run_from_root("-m", "pytest", "benchmarks/", "--benchmark-only", "--collect-only")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    active = reported_backend(completed.stdout)
    assert active["backend"] == "compiled"
    assert "cpu" in active["kernels"]
    assert "could not be loaded" not in completed.stderr


def test_report_from_the_root_imports_the_compiled_kernels(compiled_here: None) -> None:
    completed = run_from_root("-m", "benchmarks.report", "--check")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert reported_backend(completed.stdout)["backend"] == "compiled"
    assert "could not be loaded" not in completed.stderr


def test_benchmark_suite_refuses_to_run_without_the_compiled_kernels() -> None:
    code = BLOCK_KERNELS + "import pytest; sys.exit(pytest.main(['benchmarks/', '--benchmark-only', '--collect-only']))"
    completed = run_from_root("-c", code)
    assert completed.returncode != 0
    assert "the benchmarks time only the compiled kernels" in completed.stderr
    assert "pip install --no-build-isolation ." in completed.stderr


def test_report_refuses_to_run_without_the_compiled_kernels() -> None:
    completed = run_from_root("-c", BLOCK_KERNELS + "from benchmarks.report import main; sys.exit(main([]))")
    assert completed.returncode == 2
    assert "the benchmarks time only the compiled kernels" in completed.stderr


def test_fallback_warning_names_the_shadowing_folder_and_the_installed_copy(tmp_path: Path) -> None:
    installed = Path(gdram_ext.__file__).resolve().parent
    if backend().name != "compiled" or not gdram_ext.ops.compiled_module_files(installed):
        pytest.skip("needs an installed gdram_ext with its compiled module")
    source = tmp_path / "gdram_ext"
    source.mkdir()
    for path in installed.glob("*.py"):
        shutil.copy(path, source / path.name)
    completed = subprocess.run(
        [sys.executable, "-c", "import gdram_ext; print(gdram_ext.backend().name)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert completed.stdout.strip() == "reference"
    assert f"the imported package folder {source.resolve()} has no compiled module _C" in completed.stderr
    assert f"An installed copy with compiled kernels exists at {installed}" in completed.stderr
    assert "circular import" not in completed.stderr
