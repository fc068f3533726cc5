"""Looking at what a trained model does.

- :mod:`~gdram.analysis.visualize`: glimpse trajectories drawn on the images (PNG grid, animated GIF).
- :mod:`~gdram.analysis.alignment`: whether the REINFORCE estimate points at the target.

Builds on :mod:`gdram.models` and :mod:`gdram.training`.
"""
