"""The ``gdram`` console script: a clean exit on Ctrl-C even while torch is still being imported."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Import the command line (torch and all: seconds) and run it; exit code 130 if interrupted meanwhile."""
    try:
        from gdram.cli import main as run
    except KeyboardInterrupt:
        print("\ngdram: interrupted", file=sys.stderr)
        return 130
    return run(argv)
