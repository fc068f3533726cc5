"""Benchmark suite of the fused retina glimpse against its plain-PyTorch peers (pytest-benchmark).

Run ``pytest benchmarks/ --benchmark-only`` (add ``--full`` or ``GDRAM_BENCH_FULL=1`` for the full
sweeps), or ``python -m benchmarks.report`` to also get the markdown table of speedup ratios.

Both commands run from the checkout's root, which they put first on ``sys.path`` (``python -m``
puts the current directory there, pytest the first folder above this package). The checkout's
``gdram_ext/`` source folder has no compiled kernels unless it was built in place, and would then
shadow the installed package: importing this package takes the checkout's root off ``sys.path`` in
that case, so that the suite times the installed, compiled kernels. The suite and the report then
refuse to run unless ``gdram_ext.backend().name == "compiled"``.
"""

import importlib.machinery
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def _built_in_place(root: Path) -> bool:
    """Whether the checkout's ``gdram_ext/`` holds a compiled ``_C`` (``python setup.py build_ext --inplace``)."""
    return any((root / "gdram_ext" / f"_C{suffix}").is_file() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


if not _built_in_place(_ROOT):
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _ROOT]
