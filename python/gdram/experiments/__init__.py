"""Rerunnable experiments (``python -m gdram.experiments``), the top of the package beside :mod:`gdram.cli`.

- :mod:`~gdram.experiments.studies`: ``corner`` (a task only a learned glimpse can solve), ``attention`` (learned,
  random, centre and oracle glimpses side by side, seeds, table and plot) and ``alignment`` (does the REINFORCE
  estimate point at the target); each writes its runs, a JSON summary, a Markdown table and a picture.
- :mod:`~gdram.experiments.tnet`: ``tnet``, TNet with learned and random cells against the same backbone on the
  whole image, downscaled and at full resolution: accuracy, FLOPs and measured time per image.

They train through :mod:`gdram.training` and measure through :mod:`gdram.analysis`.
"""
