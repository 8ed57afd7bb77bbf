"""The terminal's view of a run: the breakdown as an aligned table and the servers line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

import pandas as pd

from .. import schema
from ..classify import Servers
from ..summarize import DEFAULT_BY
from .files import SERVERS_CSV


def human(n: float) -> str:
    """``1.5k``, ``2.3M``: a count short enough for a table cell."""
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def print_table(b: pd.DataFrame, servers: Servers, stream: TextIO) -> None:
    """The breakdown ``b`` as an aligned text table (its grouping columns, then the counts),
    with totals and the servers used."""
    keys = [c for c in b.columns if c not in schema.names(schema.BREAKDOWN) or c in DEFAULT_BY]
    headers = [*keys, "flows", "packets", "bytes", "c→s bytes", "s→c bytes", "share"]
    total_bytes = int(b["bytes"].sum()) if len(b) else 0
    rows = [
        [*(r[k] for k in keys), f"{r['flows']:,}", f"{r['packets']:,}", human(r["bytes"]), human(r["bytes_c2s"]), human(r["bytes_s2c"]),
         f"{(r['bytes'] / total_bytes if total_bytes else 0):.1%}"]
        for r in b.to_dict("records")
    ]  # fmt: skip
    rows.append(["total", *[""] * (len(keys) - 1), f"{int(b['flows'].sum()) if len(b) else 0:,}",
                 f"{int(b['packets'].sum()) if len(b) else 0:,}", human(total_bytes), "", "", ""])  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    right = range(len(keys), len(headers))

    def fmt(cells: Sequence[object]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(fmt(headers), file=stream)
    print("  ".join("-" * w for w in widths), file=stream)
    for row in rows[:-1]:
        print(fmt(row), file=stream)
    print("  ".join("-" * w for w in widths), file=stream)
    print(fmt(rows[-1]), file=stream)
    print(servers_line(servers), file=stream)


#: inferred servers named on the terminal; the rest are in servers.csv
SHOWN_SERVERS = 5


def servers_line(servers: Servers) -> str:
    """Which Exchange servers direction used, and for inferred ones on what evidence (a few;
    servers.csv has them all).

    >>> servers_line(Servers(networks=(), addresses=(), inferred=True)).startswith("No host showed")
    True
    """
    if not servers.inferred:
        return f"Exchange servers (given with --server): {servers.describe()}"
    if not servers.addresses:
        return ("No host showed Exchange evidence, so no flow is Exchange traffic by its port; "
                f"name the Exchange servers with --server ADDR|CIDR ({SERVERS_CSV} lists any weaker evidence).")
    ev = servers.evidence
    kinds = dict(zip(ev["server"], ev["kinds"], strict=True))
    shown = [f"{a} ({kinds.get(a, '').replace(' ', ', ')})" for a in servers.addresses[:SHOWN_SERVERS]]
    more = len(servers.addresses) - len(shown)
    tail = f" and {more:,} more ({SERVERS_CSV})" if more > 0 else ""
    return f"Exchange servers (inferred from Exchange evidence): {'; '.join(shown)}{tail}"
