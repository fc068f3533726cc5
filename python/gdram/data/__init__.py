"""The data: data sets by name or path, the embedded generators, and the checks of what a user gives.

- :mod:`~gdram.data.datasets`: :class:`DataSplits`, :class:`BatchedImages` (:class:`TensorImages` is one),
  :func:`batches`, :class:`DataError`.
- :mod:`~gdram.data.loading`: :func:`load_data`, the one entry point (named sets, ``.npz`` files, image folders).
- :mod:`~gdram.data.cluttered`: the embedded cluttered-digits generators (layout, then drawing) and their cache.
- :mod:`~gdram.data.canvas`: ``cluttered-digits-512``, drawn on demand from each image's layout (:class:`CanvasImages`).
- :mod:`~gdram.data.imagefiles`: the checks of image files (signatures, sizes, modes).
- :mod:`~gdram.data.classes`: the checks of the labels against each other and against a model.
- :mod:`~gdram.data.provenance`: a run's data described, fingerprinted and found again.

Imports only :mod:`gdram.files` from this package: the models, training and the command line build on it.
"""
