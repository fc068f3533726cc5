"""Training: the loss, the trainer, its run directory and checkpoints, evaluation, and the Python training API.

- :mod:`~gdram.training.api`: :func:`train` and :func:`resume`, what ``gdram train`` does, in one call.
- :mod:`~gdram.training.loss`: the hybrid loss (eq. 21-24), location guidance, the border pull.
- :mod:`~gdram.training.attention`: the policy's run (the oracle's boxes), hit rate and distances of the glimpses.
- :mod:`~gdram.training.trainer`: :class:`Trainer` (one run: epochs, validation, best checkpoint, resume).
- :mod:`~gdram.training.evaluate`: models from checkpoints, accuracy and attention totals, latency.
- :mod:`~gdram.training.checkpoint`, :mod:`~gdram.training.runfiles`, :mod:`~gdram.training.plots`: what a run
  writes (atomically) and reads back.
- :mod:`~gdram.training.metrics`, :mod:`~gdram.training.distributed`: running sums, ``torchrun`` and devices.

Builds on :mod:`gdram.models` and :mod:`gdram.data`; :mod:`gdram.analysis`, :mod:`gdram.cli` and
:mod:`gdram.experiments` build on it.
"""
