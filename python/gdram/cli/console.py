"""The ``gdram`` console script: a clean exit on Ctrl-C even while torch is still being imported."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

INTERRUPTED = 130


def _exit_while_loading(signum: int, frame: FrameType | None) -> None:
    # Nothing has run yet, so there is nothing to clean up: leave at once. Raising KeyboardInterrupt
    # instead would land wherever the import happens to be, and some places (a finaliser, an
    # ``except BaseException`` in a library) print it as a traceback and carry on.
    os.write(2, b"\ngdram: interrupted\n")
    os._exit(INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> int:
    """Import the command line (torch and all: seconds) and run it; exit code 130 if interrupted meanwhile."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _exit_while_loading) if in_main_thread else None
    try:
        from gdram.cli.main import main as run
    except KeyboardInterrupt:
        print("\ngdram: interrupted", file=sys.stderr)
        return INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return run(argv)
