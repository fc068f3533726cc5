"""The retina glimpse's contract in Python, stated once: its modes and the side of each scale.

Every Python piece (the wrapper, the checks, the reference, the module, the ``gdram`` package, the
benchmarks and the tests) reads these; the compiled kernels' own checks (``csrc/retina_glimpse.cpp``)
and geometry (``csrc/retina_glimpse.h``) state the same in C++.
"""

from __future__ import annotations

MODES = ("bilinear", "area")  # bilinear sample at each cell's centre; exact mean over each cell


def base_side(size: int, base_size: float | None) -> float:
    """Side, in pixels, of the first scale's square: ``base_size``, or ``size`` when it is None."""
    return float(size) if base_size is None else float(base_size)


def scale_sides(size: int, num_scales: int, scale_factor: float, base_size: float | None) -> list[float]:
    """Side, in pixels, of the square covered by each scale: ``base_side * scale_factor**i``."""
    base = base_side(size, base_size)
    return [base * float(scale_factor) ** i for i in range(num_scales)]
