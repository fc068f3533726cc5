"""``python -m gdram``: the ``gdram`` command line."""

import sys

from gdram.cli import main

sys.exit(main())
