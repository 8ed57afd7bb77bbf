"""Outputs: the CSV files (a run's set renamed into place together) and the terminal table."""

from __future__ import annotations

import contextlib
import os
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TextIO

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from . import schema
from .classify import Servers
from .errors import OutputError, PcapclassError
from .summarize import DEFAULT_BY

if TYPE_CHECKING:
    from .api import Result


#: timestamps in text written by pandas: microseconds (float64 epoch seconds hold no finer digit)
TS_FORMAT = "%.6f"


def make_outdir(outdir: str | os.PathLike[str]) -> Path:
    """``outdir``, made if missing; raises OutputError when it cannot be."""
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError.from_os(exc, "cannot make the output directory", path=out) from None
    return out


class Outputs:
    """The files of one run, written to hidden temporaries in ``outdir`` and renamed into place
    together once every one is complete.

    A fault on the way (a full disk, an exception, Ctrl-C) removes the temporaries and leaves
    the previous files as they were; OSError leaves as OutputError. The renames, in one
    directory, need no space; capture.csv goes last. Example::

        with Outputs("out") as out:
            out.write("flows.csv", flows)
            out.write("capture.csv", captures)
    """

    def __init__(self, outdir: str | os.PathLike[str]) -> None:
        self.outdir = make_outdir(outdir)
        self._files: list[CsvAppender] = []

    def appender(self, name: str) -> CsvAppender:
        """A file of the set, to be written block by block."""
        try:
            self._files.append(CsvAppender(self.outdir / name))
        except OSError as exc:
            raise OutputError.from_os(exc, "cannot write the outputs", path=self.outdir / name) from None
        return self._files[-1]

    def write(self, name: str, df: pd.DataFrame) -> None:
        """A file of the set, written whole."""
        self.appender(name).write(df)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc is None:
                for f in self._files:
                    f.finish()
                for f in self._files:
                    f.commit()
                return
        except OSError as err:
            exc = err
        for f in self._files:
            f.discard()
        if isinstance(exc, OSError) and not isinstance(exc, PcapclassError):
            raise OutputError.from_os(exc, "cannot write the outputs", path=self.outdir) from None


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` through a temporary file and a rename: never a torn file."""
    with Outputs(path.parent) as out:
        out.write(path.name, df)


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` whole or not at all: when a write fails (a full disk) the
    file is cut back to its length before, so that a reader never sees half a row."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputError.from_os(exc, "cannot append", path=path) from None
    try:
        start = os.fstat(fd).st_size
        rest = memoryview(text.encode())
        while rest:
            rest = rest[os.write(fd, rest) :]
    except OSError as exc:
        os.ftruncate(fd, start)
        raise OutputError.from_os(exc, "cannot append", path=path) from None
    finally:
        os.close(fd)


class CsvAppender:
    """A CSV file written block by block (header once) to a hidden temporary beside ``path``,
    which ``commit`` renames into place.

    pyarrow's CSV writer is about six times faster than ``DataFrame.to_csv``, which matters
    for the flows file of a large capture; it writes to a native file without holding the
    GIL, so a worker thread formats and writes a block while the caller classifies the next
    one (one worker keeps the blocks in order; at most one block waits in memory). Floats are
    written in their shortest round-trip form; booleans as ``true``/``false``; missing values
    as empty fields. The temporary is made with the mode the umask gives (``mkstemp`` would
    make it 0600, and the rename would keep that).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self._fh = pa.OSFile(str(self._tmp), "wb")
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

    def finish(self) -> None:
        """Write what is pending and close the temporary."""
        try:
            self._wait()
        finally:
            self._worker.shutdown()
            self._fh.close()

    def commit(self) -> None:
        """The file appears under its name."""
        os.replace(self._tmp, self._path)

    def discard(self) -> None:
        """Give up (an error on the way): no block is left pending, no temporary file behind."""
        self._worker.shutdown(cancel_futures=True)
        with contextlib.suppress(OSError):  # a block that did not fit fails again here: the file goes anyway
            self._fh.close()
        self._tmp.unlink(missing_ok=True)


def write_outputs(result: Result, outdir: str | os.PathLike[str]) -> list[Path]:
    """flows.csv, breakdown.csv, servers.csv and capture.csv in ``outdir``, renamed into place together."""
    tables = {"flows.csv": result.flows, "breakdown.csv": result.breakdown, "servers.csv": result.servers.evidence, "capture.csv": result.captures}
    with Outputs(outdir) as out:
        for name, df in tables.items():
            out.write(name, df)
    return [out.outdir / name for name in tables]


def human(n: float) -> str:
    """``1.5k``, ``2.3M``: a count short enough for a table cell."""
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def print_table(result: Result, stream: TextIO) -> None:
    """The breakdown as an aligned text table (its grouping columns, then the counts), with
    totals and the servers used."""
    b = result.breakdown
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
