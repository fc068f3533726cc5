"""``python -m gdram``: the ``gdram`` command line."""

import sys

from gdram.cli.console import main

sys.exit(main())
