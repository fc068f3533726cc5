"""``python -m gdram``: the ``gdram`` command line."""

import sys

from gdram.console import main

sys.exit(main())
