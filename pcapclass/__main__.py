"""``python -m pcapclass``: the same program as the ``pcapclass`` command."""

import sys

from .cli import main

sys.exit(main())
