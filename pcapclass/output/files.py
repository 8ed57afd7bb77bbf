"""The names of a run's output files: which tables a run writes, in which format, under what name."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from ..errors import OutputError


class Table(StrEnum):
    """A table a run writes; its file is ``Format.file(table)`` (``flows.csv``)."""

    FLOWS = "flows"
    BREAKDOWN = "breakdown"
    SERVERS = "servers"
    TIMESERIES = "timeseries"
    CAPTURE = "capture"


class Format(StrEnum):
    """The file format of a run's tables (``--format``)."""

    CSV = "csv"
    PARQUET = "parquet"
    JSONL = "jsonl"

    def file(self, table: str) -> str:
        """The file name of ``table`` (``flows``) in this format.

        >>> Format.CSV.file(Table.FLOWS)
        'flows.csv'
        """
        return f"{table}.{self.value}"


#: the CSV files by name: those live capture writes (always CSV: they grow while the capture runs)
FLOWS_CSV = Format.CSV.file(Table.FLOWS)
TIMESERIES_CSV = Format.CSV.file(Table.TIMESERIES)
BREAKDOWN_CSV = Format.CSV.file(Table.BREAKDOWN)
CAPTURE_CSV = Format.CSV.file(Table.CAPTURE)
#: the servers table, named in messages
SERVERS_CSV = Format.CSV.file(Table.SERVERS)


def make_outdir(outdir: str | os.PathLike[str]) -> Path:
    """``outdir``, made if missing; raises OutputError when it cannot be."""
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError.from_os(exc, "cannot make the output directory", path=out) from None
    return out
