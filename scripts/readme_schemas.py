"""Rewrite the README's output-schema tables from pcapclass/schema.py (the one place columns
are defined). The tables appear in the README in this order: flows, breakdown, capture,
servers, timeseries; each as the text formats write it (ISO 8601 twins of the epoch columns).
tests/test_schema.py fails when they drift."""

from __future__ import annotations

from pathlib import Path

from pcapclass import schema

README = Path(__file__).resolve().parent.parent / "README.md"
TABLES = (schema.FLOWS, schema.BREAKDOWN, schema.CAPTURE, schema.SERVERS, schema.TIMESERIES)
HEADER = "| column | type | meaning |"


def render(text: str) -> str:
    """``text`` with each schema table replaced by the current one, in order."""
    lines = text.split("\n")
    out: list[str] = []
    tables = iter(TABLES)
    i = 0
    while i < len(lines):
        if lines[i] == HEADER:
            out.extend(schema.markdown(schema.with_readable_times(next(tables))).split("\n"))
            i += 1
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
