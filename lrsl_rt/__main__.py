"""``python -m lrsl_rt``: the same as the ``lrsl-rt`` command."""

import sys

from .cli import main

sys.exit(main())
