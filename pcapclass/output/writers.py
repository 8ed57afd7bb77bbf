"""The one writer policy of every output file, offline and live alike.

A CSV field is written by pyarrow's CSV writer: strings (and the header) quoted, floats in their
shortest round-trip form, booleans ``true``/``false``, missing values empty, each epoch column
followed by its ISO 8601 twin. A file is made with the mode the umask gives. A run's set of files
appears together (``Outputs``); live capture's growing files take whole rows (``append_rows``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .. import schema
from ..errors import OutputError, PcapclassError
from .files import Format, Table, make_outdir
from .isotime import iso_text


class Outputs:
    """The files of one run, written to hidden temporaries in ``outdir`` and renamed into place
    together once every one is complete; each file's format follows its suffix (``.csv``,
    ``.parquet``, ``.jsonl``).

    A fault on the way (a full disk, an exception, Ctrl-C) removes the temporaries and leaves
    the previous files as they were; OSError leaves as OutputError. The renames, in one
    directory, need no space; capture.csv goes last. Example::

        with Outputs("out") as out:
            out.write("flows.csv", flows)
            out.write("capture.csv", captures)
    """

    def __init__(self, outdir: str | os.PathLike[str]) -> None:
        self.outdir = make_outdir(outdir)
        self._files: list[Appender] = []

    def appender(self, name: str) -> Appender:
        """A file of the set, to be written block by block."""
        path = self.outdir / name
        kind = APPENDERS.get(path.suffix)
        if kind is None:
            raise ValueError(f"no writer for {name!r}: the suffix is none of {', '.join(APPENDERS)}")
        try:
            self._files.append(kind(path))
        except OSError as exc:
            raise OutputError.from_os(exc, "cannot write the outputs", path=path) from None
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


def append_text(path: Path, text: str | bytes) -> None:
    """Append ``text`` to ``path`` whole or not at all: when a write fails (a full disk) the
    file is cut back to its length before, so that a reader never sees half a row."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputError.from_os(exc, "cannot append", path=path) from None
    try:
        start = os.fstat(fd).st_size
        rest = memoryview(text.encode() if isinstance(text, str) else text)
        while rest:
            rest = rest[os.write(fd, rest) :]
    except OSError as exc:
        os.ftruncate(fd, start)
        raise OutputError.from_os(exc, "cannot append", path=path) from None
    finally:
        os.close(fd)


def with_readable_times(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the ISO 8601 UTC text of each epoch column beside it (``schema.READABLE_TIMES``),
    to the microsecond; empty where the epoch is missing. For the text formats only.

    >>> with_readable_times(pd.DataFrame({"first_ts": [1084443427.311224]}))["first_time"].tolist()
    ['2004-05-13T10:17:07.311224Z']
    """
    out = df
    for position, text, iso in _readable_times(df):
        out = out.copy() if out is df else out
        out.insert(position, text, pd.Series(iso.to_numpy(zero_copy_only=False), index=df.index, dtype=object))
    return out


def _readable_times(df: pd.DataFrame) -> list[tuple[int, str, pa.LargeStringArray]]:
    """Each epoch column's ISO twin: where it goes among the columns, its name, its text."""
    columns = list(df.columns)
    out = []
    for ts, text in ((ts, text) for ts, text in schema.READABLE_TIMES.items() if ts in columns):
        position = columns.index(ts) + 1
        columns.insert(position, text)
        out.append((position, text, iso_text(df[ts].to_numpy(np.float64))))
    return out


class Appender:
    """A file written block by block to a hidden temporary beside ``path``, which ``commit``
    renames into place; a subclass says how a block is encoded.

    A worker thread writes a block while the caller classifies the next one (one worker
    keeps the blocks in order; at most one block waits in memory): pyarrow's writers hold
    no GIL. The temporary is made with the mode the umask gives (``mkstemp`` would make it
    0600, and the rename would keep that).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self._fh = pa.OSFile(str(self._tmp), "wb")
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcapclass-out")
        self._pending: Future[None] | None = None

    def write(self, df: pd.DataFrame) -> None:
        work = self._encode(df)
        self._wait()
        self._pending = self._worker.submit(work)

    def _encode(self, df: pd.DataFrame) -> Callable[[], None]:
        """The block made ready in the caller's thread; what the worker then does with it."""
        raise NotImplementedError

    def _close(self) -> None:
        """Once every block is written: what the format writes last."""

    def _wait(self) -> None:
        """Let the block being written finish; its error, if any, is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def finish(self) -> None:
        """Write what is pending and close the temporary."""
        try:
            self._wait()
            self._close()
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


class CsvAppender(Appender):
    """CSV, header once, through pyarrow's CSV writer (``csv_table``): about six times faster
    than ``DataFrame.to_csv``, which matters for the flows file of a large capture."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._header = True

    def _encode(self, df: pd.DataFrame) -> Callable[[], None]:
        table, options = csv_table(df, header=self._header)
        self._header = False
        return lambda: _write_csv(table, self._fh, options)


def csv_table(df: pd.DataFrame, *, header: bool) -> tuple[pa.Table, pa_csv.WriteOptions]:
    """``df`` made ready for the CSV writer, and its options: the CSV policy of every file."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    for position, text, iso in _readable_times(df):
        table = table.add_column(position, text, iso)
    return table, pa_csv.WriteOptions(include_header=header, quoting_style="needed")


def _write_csv(table: pa.Table, sink: pa.NativeFile, options: pa_csv.WriteOptions) -> None:
    """``csv_table``'s table written to ``sink``. Dictionary columns (categoricals) are decoded
    to their values first: pyarrow's writer prints a dictionary column a batch at a time
    through the dictionary, three times slower than the decoded column (a flows block of
    65,536 rows: 50 ms, 40 ms with the decoding)."""
    plain = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    pa_csv.write_csv(pa.table(plain, names=table.column_names), sink, options)


class ParquetAppender(Appender):
    """Parquet, a row group per block, typed as the DataFrame is (categories stay dictionary
    columns, read back as categoricals; pandas' own metadata brings back ``Int64`` and the
    string dtype): ``pandas.read_parquet`` gives the frame written. Epoch columns stay numbers."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None

    def _encode(self, df: pd.DataFrame) -> Callable[[], None]:
        if self._schema is None:
            # one type per column for every block: dictionary indices as wide as any block needs
            inferred = pa.Schema.from_pandas(df, preserve_index=False)
            fields = [f.with_type(pa.dictionary(pa.int32(), f.type.value_type)) if pa.types.is_dictionary(f.type) else f for f in inferred]
            self._schema = pa.schema(fields, metadata=inferred.metadata)
        table = pa.Table.from_pandas(df, schema=self._schema, preserve_index=False)
        return lambda: self._write_table(table)

    def _write_table(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._fh, table.schema)
        self._writer.write_table(table)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class JsonlAppender(Appender):
    """JSON Lines: one object per row, numbers as numbers (epoch seconds in their shortest
    round-trip form), missing values ``null``, the epoch columns' ISO 8601 twins as strings."""

    def _encode(self, df: pd.DataFrame) -> Callable[[], None]:
        df = with_readable_times(df)
        cells = [_json_cells(df[name], ("{" if i == 0 else ",") + json.dumps(name) + ":") for i, name in enumerate(df.columns)]
        data = "".join(map("".join, zip(*cells, ["}\n"] * len(df), strict=True))).encode()
        return lambda: self._fh.write(data)


def _json_cells(column: pd.Series, prefix: str) -> list[str]:
    """Each value of ``column`` as JSON after ``prefix`` (its key); categories encoded once."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = [prefix + json.dumps(str(c), ensure_ascii=False) for c in column.cat.categories] + [prefix + "null"]
        return [names[code] for code in column.cat.codes.tolist()]  # code -1 (missing) takes the last
    if pd.api.types.is_bool_dtype(column):
        return [prefix + ("true" if v else "false") for v in column.tolist()]
    missing = column.isna().tolist()
    # numbers by Python's repr (the shortest round-trip float), anything else as a JSON string
    dump = repr if pd.api.types.is_numeric_dtype(column) else lambda v: json.dumps(v, ensure_ascii=False)
    return [prefix + ("null" if m else dump(v)) for v, m in zip(column.astype(object).tolist(), missing, strict=True)]


#: the writer of each file suffix
APPENDERS: dict[str, type[Appender]] = {".csv": CsvAppender, ".parquet": ParquetAppender, ".jsonl": JsonlAppender}


def write_tables(tables: Mapping[Table, pd.DataFrame], outdir: str | os.PathLike[str], fmt: Format = Format.CSV) -> list[Path]:
    """Each table (``Table`` name → frame, capture last) as its file in ``outdir``, in format
    ``fmt``, renamed into place together."""
    with Outputs(outdir) as out:
        for name, df in tables.items():
            out.write(fmt.file(name), df)
    return [out.outdir / fmt.file(name) for name in tables]


def append_rows(path: Path, df: pd.DataFrame) -> None:
    """Append ``df``'s rows to the CSV file ``path`` in one write, the header first when the
    file is new: a reader sees whole rows, written as every other CSV file is."""
    table, options = csv_table(df, header=not path.exists())
    sink = pa.BufferOutputStream()
    _write_csv(table, sink, options)
    data = sink.getvalue().to_pybytes()
    if data:
        append_text(path, data)
