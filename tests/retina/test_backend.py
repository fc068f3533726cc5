"""Backend selection: the compiled kernels when they load, the pure-PyTorch reference otherwise.

The fallback is tested in a fresh interpreter whose import of ``gdram_ext._C`` is blocked, so
that this process keeps its compiled operator for comparison.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import gdram_ext
from gdram_ext import MODES, Backend, backend, retina_glimpse

# Two ways for the extension to be missing: not importable at all (no compiler at install
# time), or found but failing to load (an ABI mismatch: the loader raises ImportError).
BLOCKERS = {
    "module-missing": 'sys.modules["gdram_ext._C"] = None',
    "load-fails": textwrap.dedent(
        """
        import importlib.abc

        class RefuseCompiledKernels(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "gdram_ext._C":
                    raise ImportError("undefined symbol: _ZN3c10 (simulated ABI mismatch)")
                return None

        sys.meta_path.insert(0, RefuseCompiledKernels())
        """
    ),
}

CHILD = """
import sys
import warnings

{blocker}

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import gdram_ext
    import torch

    inputs = torch.load(sys.argv[1])
    results = {{}}
    for mode in gdram_ext.MODES:
        images = inputs["images"].clone().requires_grad_()
        locations = inputs["locations"].clone().requires_grad_()
        out = gdram_ext.retina_glimpse(images, locations, 5, 3, 1.5, mode, 3.0)
        out.backward(inputs["grad_output"])
        module_out = gdram_ext.RetinaGlimpse(5, 3, 1.5, mode, 3.0)(inputs["images"], inputs["locations"])
        results[mode] = (out.detach(), images.grad, locations.grad, module_out)
    try:
        gdram_ext.retina_glimpse(inputs["images"], inputs["locations"], size=0)
    except ValueError as error:
        results["error"] = str(error)

results["warnings"] = [
    str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "gdram_ext" in str(w.message)
]
results["backend"] = tuple(gdram_ext.backend())
results["backend_type"] = type(gdram_ext.backend()).__name__
results["kernels_missing"] = gdram_ext.ops._C is None
torch.save(results, sys.argv[2])
"""


@pytest.fixture(scope="module")
def fallback_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "images": torch.randn(2, 2, 11, 9, dtype=torch.float64, generator=generator),
        "locations": torch.rand(2, 2, dtype=torch.float64, generator=generator) * 2.4 - 1.2,
        "grad_output": torch.randn(2, 6, 5, 5, dtype=torch.float64, generator=generator),
    }


@pytest.mark.parametrize("blocker", list(BLOCKERS))
def test_without_compiled_kernels_import_warns_once_and_the_reference_gives_the_same_results(
    blocker: str, fallback_inputs: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    inputs_path, results_path = tmp_path / "inputs.pt", tmp_path / "results.pt"
    torch.save(fallback_inputs, inputs_path)
    script = CHILD.format(blocker=BLOCKERS[blocker])
    env = {key: value for key, value in os.environ.items() if key != "GDRAM_EXT_ALLOW_REFERENCE"}
    completed = subprocess.run(
        [sys.executable, "-c", script, str(inputs_path), str(results_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    results = torch.load(results_path)

    # One RuntimeWarning, at import, that says what happened; none per call afterwards.
    assert len(results["warnings"]) == 1, results["warnings"]
    assert "compiled kernels could not be loaded" in results["warnings"][0]
    assert "reference" in results["warnings"][0]
    assert results["backend"] == ("reference", ())
    assert results["backend_type"] == "Backend"
    assert results["kernels_missing"]
    assert "size" in results["error"]

    for mode in MODES:
        images = fallback_inputs["images"].clone().requires_grad_()
        locations = fallback_inputs["locations"].clone().requires_grad_()
        out = retina_glimpse(images, locations, 5, 3, 1.5, mode, 3.0)
        out.backward(fallback_inputs["grad_output"])
        reference_out, reference_images, reference_locations, module_out = results[mode]
        torch.testing.assert_close(reference_out, out.detach(), atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(module_out, out.detach(), atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(reference_images, images.grad, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(reference_locations, locations.grad, atol=1e-9, rtol=1e-10)


def test_compiled_backend_is_active_in_this_install() -> None:
    if os.environ.get("GDRAM_EXT_ALLOW_REFERENCE") == "1":
        pytest.skip("GDRAM_EXT_ALLOW_REFERENCE=1: the reference backend is allowed here")
    active = backend()
    assert active.name == "compiled", "the compiled kernels did not load: reinstall gdram-ext"
    assert "cpu" in active.kernels
    assert gdram_ext.ops._C is not None


def test_backend_reports_a_named_tuple_of_name_and_kernels() -> None:
    active = backend()
    assert isinstance(active, Backend)
    assert active._fields == ("name", "kernels")
    assert active.name in ("compiled", "reference")
    assert isinstance(active.kernels, tuple)
    assert set(active.kernels) <= {"cpu", "cuda"}
    if active.name == "reference":
        assert active.kernels == ()
    else:
        assert ("cuda" in active.kernels) == bool(gdram_ext.ops._C.cuda_compiled)


def test_cuda_kernels_are_built_when_a_gpu_is_present() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    if os.environ.get("GDRAM_EXT_ALLOW_REFERENCE") == "1":
        pytest.skip("GDRAM_EXT_ALLOW_REFERENCE=1: the reference backend is allowed here")
    assert "cuda" in backend().kernels
