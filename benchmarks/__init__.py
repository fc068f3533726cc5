"""Benchmark suite of the fused retina glimpse against its plain-PyTorch peers (pytest-benchmark).

Run ``pytest benchmarks/ --benchmark-only`` (add ``--full`` or ``GDRAM_BENCH_FULL=1`` for the full
sweeps), or ``python -m benchmarks.report`` to also get the markdown table of speedup ratios.
"""
