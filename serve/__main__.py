"""`python -m ortserve.serve` runs `ortserve serve`."""

import sys

from .cli import main

sys.exit(main())
