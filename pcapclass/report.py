"""Outputs: the CSV files (written atomically) and the terminal table."""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from .classify import Servers

if TYPE_CHECKING:
    from .api import Result


#: timestamps in text written by pandas: microseconds (float64 epoch seconds hold no finer digit)
TS_FORMAT = "%.6f"


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` through a temporary file and a rename: never a torn file.

    pyarrow's CSV writer does it about six times faster than ``DataFrame.to_csv``, which
    matters for the flows file of a large capture. Floats are written in their shortest
    round-trip form; booleans as ``true``/``false``; missing values as empty fields.
    """
    writer = CsvAppender(path)
    try:
        writer.write(df)
        writer.close()
    except BaseException:
        writer.discard()
        raise


class CsvAppender:
    """flows.csv written block by block (header once), renamed into place when complete.

    A block is formatted and written by a worker thread while the caller classifies the next
    one: pyarrow writes CSV to a native file without holding the GIL, so on two cores the
    two overlap. One worker keeps the blocks in order; at most one block waits in memory.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        self._fh = pa.OSFile(self._tmp, "wb")
        self._path = path
        self._header = True
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcapclass-csv")
        self._pending: Future[None] | None = None

    def write(self, df: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(df, preserve_index=False)
        options = pa_csv.WriteOptions(include_header=self._header, quoting_style="needed")
        self._wait()
        self._pending = self._worker.submit(pa_csv.write_csv, table, self._fh, options)
        self._header = False

    def _wait(self) -> None:
        """Let the block being written finish; its error, if any, is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Finish: the file appears under its name only now."""
        try:
            self._wait()
        finally:
            self._worker.shutdown()
            self._fh.close()
        os.replace(self._tmp, self._path)

    def discard(self) -> None:
        """Give up (an error on the way): no block is left pending, no temporary file behind."""
        self._worker.shutdown(cancel_futures=True)
        self._fh.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)


def write_outputs(result: Result, outdir: str | os.PathLike[str]) -> list[Path]:
    """flows.csv, breakdown.csv, capture.csv and servers.csv in ``outdir``."""
    out = Path(outdir)
    files = [out / "flows.csv", out / "breakdown.csv", out / "capture.csv", out / "servers.csv"]
    for df, path in zip((result.flows, result.breakdown, result.captures, result.servers.evidence), files):
        write_csv(df, path)
    return files


def human(n: float) -> str:
    """``1.5k``, ``2.3M``: a count short enough for a table cell."""
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def print_table(result: Result, stream: TextIO) -> None:
    """The breakdown as an aligned text table, with totals and the servers used."""
    b = result.breakdown
    headers = ["service", "direction", "flows", "packets", "bytes", "c→s bytes", "s→c bytes", "share"]
    total_bytes = int(b["bytes"].sum()) if len(b) else 0
    rows = [
        [r.service, r.direction, f"{r.flows:,}", f"{r.packets:,}", human(r.bytes), human(r.bytes_c2s), human(r.bytes_s2c),
         f"{(r.bytes / total_bytes if total_bytes else 0):.1%}"]
        for r in b.itertuples(index=False)
    ]  # fmt: skip
    rows.append(["total", "", f"{int(b['flows'].sum()) if len(b) else 0:,}", f"{int(b['packets'].sum()) if len(b) else 0:,}",
                 human(total_bytes), "", "", ""])  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    right = {2, 3, 4, 5, 6, 7}
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(headers), file=stream)
    print("  ".join("-" * w for w in widths), file=stream)
    for row in rows[:-1]:
        print(fmt(row), file=stream)
    print("  ".join("-" * w for w in widths), file=stream)
    print(fmt(rows[-1]), file=stream)
    print(servers_line(result.servers), file=stream)


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
                "name the Exchange servers with --server ADDR|CIDR (servers.csv lists any weaker evidence).")
    ev = servers.evidence
    kinds = dict(zip(ev["server"], ev["kinds"], strict=True))
    shown = [f"{a} ({kinds.get(a, '').replace(' ', ', ')})" for a in servers.addresses[:SHOWN_SERVERS]]
    more = len(servers.addresses) - len(shown)
    tail = f" and {more:,} more (servers.csv)" if more > 0 else ""
    return f"Exchange servers (inferred from Exchange evidence): {'; '.join(shown)}{tail}"
