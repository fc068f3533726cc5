"""The ``gdram`` command line, a thin layer over the Python API: flags to calls, errors and results to lines.

- :mod:`~gdram.cli.console`: the console script (a clean Ctrl-C while torch loads).
- :mod:`~gdram.cli.main`: the ``train``, ``eval`` and ``visualize`` commands, their error lines and exit codes.
- :mod:`~gdram.cli.parser`: every flag, its type and help; the flag of a config field or training setting.
- :mod:`~gdram.cli.signals`: Ctrl-C and SIGTERM while a command runs (130, 143, a watchdog).
- :mod:`~gdram.cli.options`: checked option types, one-line usage errors, traceback files.

The top of the package: nothing in :mod:`gdram` imports it (``python -m gdram.experiments`` uses its option types).
"""
