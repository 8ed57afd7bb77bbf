"""--format: Parquet read back is the in-memory frame, and says what CSV and JSON Lines say;
the text formats carry ISO 8601 UTC times beside the epoch ones (checked against Python's
datetime, not numpy's conversion that writes them)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from conftest import FIXTURES

import pcapclass
from pcapclass import schema
from pcapclass.api import Classifier
from pcapclass.cli import main

CAPTURES = [FIXTURES / "exchange_services.pcap", FIXTURES / "corpus" / "zeek" / "mapi.pcap", FIXTURES / "idle_split.pcap"]
TABLES = {"flows": schema.FLOWS, "breakdown": schema.BREAKDOWN, "capture": schema.CAPTURE, "servers": schema.SERVERS}
BY = ["service", "direction", "server_addr", "fragment"]


def run(tmp_path: Path, fmt: str) -> Path:
    out = tmp_path / fmt
    assert main(["classify", *map(str, CAPTURES), "-o", str(out), "-q", "--format", fmt, "--by", "server_addr,fragment"]) == 0
    return out


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if not math.isnan(ts) else ""


def read_csv(path: Path, columns: tuple[schema.Column, ...]) -> pd.DataFrame:
    """A CSV read with the schema's dtypes (a breakdown's keys as text, as it holds them)."""
    dtypes = {c.name: c.dtype for c in columns if c.dtype != "bool"}
    keys = {k: "str" for k in BY} if columns is schema.BREAKDOWN else {}
    return pd.read_csv(path, dtype={**dtypes, **keys}, keep_default_na=False,
                       na_values={"ip_proto": [""], "first_ts": [""], "last_ts": [""]})  # fmt: skip


def test_parquet_reads_back_as_the_frames_in_memory(tmp_path: Path) -> None:
    out = run(tmp_path, "parquet")
    clf = Classifier()
    clf.read_all(CAPTURES)  # in capture-time order, as the command reads them
    result = clf.result(by=BY)
    frames = {"flows": result.flows, "breakdown": result.breakdown, "capture": result.captures, "servers": result.servers.evidence}
    for name, df in frames.items():
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"), df, check_exact=True, obj=name)
    assert isinstance(pd.read_parquet(out / "flows.parquet")["service"].dtype, pd.CategoricalDtype)


def test_parquet_of_spilled_blocks_reads_back_the_same_flows(tmp_path: Path) -> None:
    """Blocks become row groups whose categories differ; read back, the values are the same."""
    outs = []
    for spill in (None, 3):
        clf = Classifier()
        if spill:
            clf.store.spill_flows = spill
        for path in CAPTURES:
            clf.read(path)
        outs.append(tmp_path / str(spill))
        clf.write(outs[-1], fmt=pcapclass.Format.PARQUET)
        clf.close()
    whole, blocks = (pd.read_parquet(o / "flows.parquet") for o in outs)
    pd.testing.assert_frame_equal(whole, blocks, check_exact=True, check_categorical=False)


def test_parquet_csv_and_jsonl_say_the_same(tmp_path: Path) -> None:
    csv_out, pq_out, js_out = run(tmp_path, "csv"), run(tmp_path, "parquet"), run(tmp_path, "jsonl")
    for name, columns in TABLES.items():
        typed = pd.read_parquet(pq_out / f"{name}.parquet")
        text = read_csv(csv_out / f"{name}.csv", columns)
        times = [t for ts, t in schema.READABLE_TIMES.items() if ts in typed.columns]
        assert list(text.drop(columns=BY[2:] if name == "breakdown" else []).columns) == [c for c in schema.names(schema.with_readable_times(columns)) if c in text.columns]
        for ts, t in schema.READABLE_TIMES.items():
            if ts in typed.columns:
                assert list(text.columns).index(t) == list(text.columns).index(ts) + 1
                assert text[t].tolist() == [iso(v) for v in typed[ts]], f"{name}.{t}"
        pd.testing.assert_frame_equal(text.drop(columns=times), typed, check_exact=True, check_dtype=False,
                                      check_categorical=False, obj=f"{name}.csv")  # fmt: skip
        lines = (js_out / f"{name}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert len(rows) == len(typed)
        for row, want in zip(rows, typed.to_dict("records"), strict=True):
            for key, value in want.items():
                got = row[key]
                if key in schema.READABLE_TIMES:
                    assert (isinstance(got, float) and got == value) or (got is None and math.isnan(value)), (name, key, got)
                    assert row[schema.READABLE_TIMES[key]] == iso(value)
                elif value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                    assert got is None, (name, key)
                else:
                    assert got == (value.item() if hasattr(value, "item") else value), (name, key, got, value)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_an_empty_run_writes_every_table(tmp_path: Path, fmt: str) -> None:
    """A capture with no packet: every table, with its columns and no rows."""
    empty = tmp_path / "empty.pcap"
    empty.write_bytes((FIXTURES / "exchange_services.pcap").read_bytes()[:24])
    out = tmp_path / "out"
    assert main(["classify", str(empty), "-o", str(out), "-q", "--format", fmt]) == 0
    for name in TABLES:
        assert (out / f"{name}.{fmt}").exists()
    if fmt == "parquet":
        assert list(pd.read_parquet(out / "flows.parquet").columns) == schema.names(schema.FLOWS)
