"""``python -m gdram.experiments``: the rerunnable experiments' command line."""

import sys

from gdram.experiments.studies import main

sys.exit(main())
