"""``python -m sweeper.report``."""

import sys

from .cli import main

sys.exit(main())
