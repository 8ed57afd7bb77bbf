"""A one-line progress bar on stderr: bytes read of the total, only for people watching.

Silent when stderr is not a terminal (pipes, CI logs, tests) or when asked to be quiet, so
that machine-read output is never interleaved with carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: seconds between redraws: often enough to look alive, rarely enough to cost nothing
REDRAW_EVERY = 0.2
BAR_WIDTH = 30


class Progress:
    """``update(done)`` as bytes are read; ``close()`` clears the line."""

    def __init__(self, total: int | None, *, label: str = "", stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self.label = label
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, *, packets: int = 0) -> None:
        """Redraw if enough time passed since the last redraw."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < REDRAW_EVERY:
            return
        self._last = now
        rate = packets / max(now - self._start, 1e-9)
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * BAR_WIDTH)
            text = f"{self.label} [{bar:<{BAR_WIDTH}}] {frac:6.1%} {done / 2**20:,.0f}/{self.total / 2**20:,.0f} MiB {rate / 1e3:,.0f} k pkt/s"
        else:
            text = f"{self.label} {done / 2**20:,.0f} MiB {rate / 1e3:,.0f} k pkt/s"
        self.stream.write("\r" + text[:200] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar so the next line starts clean."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
