"""The models: what a network is and computes, with no knowledge of data files or training runs.

- :mod:`~gdram.models.config`: :class:`GDRAMConfig`, the variants, location policies and training recipes.
- :mod:`~gdram.models.networks`: one ``nn.Module`` per network of the paper (glimpse, cores, emission, ...).
- :mod:`~gdram.models.gdram`: :class:`GDRAM` wires them; :func:`create_model` builds every variant and policy.
- :mod:`~gdram.models.official`: the authors' published checkpoints mapped onto :class:`GDRAM`.
- :mod:`~gdram.models.tnet_config`, :mod:`~gdram.models.tnet`: TNet (top-down attention over an image pyramid).

Imports only :mod:`gdram_ext` and torch: every other part of :mod:`gdram` builds on this one.
"""
