"""``python -m pcapclass``: the same program as the ``pcapclass`` command."""

from .cli import run

run()
