"""The ``gdram`` command line, a thin layer over the Python API: flags to calls, errors and results to lines.

- :mod:`~gdram.cli.console`: the console script (a clean Ctrl-C while torch loads).
- :mod:`~gdram.cli.main`: the parser and the ``train``, ``eval`` and ``visualize`` commands, stop signals, exit codes.
- :mod:`~gdram.cli.options`: checked option types, one-line usage errors, traceback files.

The top of the package: nothing in :mod:`gdram` imports it (``python -m gdram.experiments`` uses its option types).
"""
