"""The terminal view of ``pcapclass live``: the breakdown so far, packets/s and drops, redrawn in place.

Drawn with rich on stderr and only on a terminal, so that stdout and logs stay clean.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..output import human
from .capture import LiveStatus


class LiveView:
    """``update(status)`` redraws; ``close()`` leaves the last frame on screen."""

    def __init__(self, *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        stream = stream if stream is not None else sys.stderr
        self.enabled = stream.isatty() if enabled is None else enabled
        self._live: Live | None = None
        if self.enabled:
            self._live = Live(console=Console(file=stream), auto_refresh=False, transient=False)
            self._live.start()

    def update(self, status: LiveStatus) -> None:
        """Show ``status`` (a no-op when disabled)."""
        if self._live is not None:
            self._live.update(render(status), refresh=True)

    def close(self) -> None:
        """Stop redrawing."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def render(status: LiveStatus) -> Group:
    """The header line and the breakdown table of one status."""
    drops = Text(f"{status.drops:,} dropped", style="bold red" if status.drops else "green")
    head = Text.assemble(
        f"{status.interface} ({status.backend})  {status.elapsed:,.0f} s  {status.packets:,} packets  "
        f"{human(status.bytes)}B  {status.packets_per_s:,.0f} pkt/s  {status.open_flows:,} open flows  ",
        drops,
    )
    table = Table(box=None, pad_edge=False)
    for name, right in (("service", False), ("direction", False), ("flows", True), ("packets", True), ("bytes", True),
                        ("c→s bytes", True), ("s→c bytes", True)):  # fmt: skip
        table.add_column(name, justify="right" if right else "left")
    for r in status.totals.to_dict("records"):
        table.add_row(r["service"], r["direction"], f"{r['flows']:,}", f"{r['packets']:,}", human(r["bytes"]), human(r["bytes_c2s"]),
                      human(r["bytes_s2c"]))  # fmt: skip
    servers = status.servers.describe() or "none found yet"
    how = "inferred" if status.servers.inferred else "given"
    return Group(head, table, Text(f"Exchange servers ({how}): {servers}", style="dim"))
