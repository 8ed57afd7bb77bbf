"""Outputs: the files of a run (CSV, Parquet or JSON Lines) under one writer policy, and the terminal table."""

from .files import (
    BREAKDOWN_CSV,
    CAPTURE_CSV,
    FLOWS_CSV,
    SERVERS_CSV,
    TIMESERIES_CSV,
    Format,
    Table,
    make_outdir,
)
from .terminal import human, print_table
from .writers import (
    Outputs,
    append_rows,
    append_text,
    write_csv,
    write_tables,
)

__all__ = [
    "BREAKDOWN_CSV",
    "CAPTURE_CSV",
    "FLOWS_CSV",
    "SERVERS_CSV",
    "TIMESERIES_CSV",
    "Format",
    "Outputs",
    "Table",
    "append_rows",
    "append_text",
    "human",
    "make_outdir",
    "print_table",
    "write_csv",
    "write_tables",
]
