"""Offline --interval against tshark's ``-z io,stat``: packets and bytes per interval, and the
bytes an Exchange server sent per interval (a display filter on its address), on real
captures whose flows span many intervals; idle_split.pcap reuses one 5-tuple for two flows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import CORPUS, FIXTURES

import pcapclass
from pcapclass import schema
from pcapclass.api import Classifier
from pcapclass.cli import main

#: capture, interval seconds
CASES = [
    (CORPUS / "zeek" / "mapi.pcap", 0.5),
    (CORPUS / "zeek" / "pop3.pcap", 10.0),
    (CORPUS / "nDPI" / "synscan.pcap", 2.0),
    (CORPUS / "nDPI" / "nntp.pcap", 5.0),
    (FIXTURES / "idle_split.pcap", 60.0),
]
_ROW = re.compile(r"^\|\s*[\d.]+\s*<>\s*(?:[\d.]+|Dur)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|$")


def io_stat(tshark: str, capture: Path, interval: float, display_filter: str = "") -> dict[int, tuple[int, int]]:
    """tshark's frames and bytes per interval (numbered from 0 at the first packet), where any."""
    # {:g}: "io,stat,10.0" makes tshark 4 die of SIGFPE, "io,stat,10" does not
    stat = f"io,stat,{interval:g}" + (f",{display_filter}" if display_filter else "")
    out = subprocess.run([tshark, "-q", "-r", str(capture), "-z", stat], capture_output=True, text=True, check=True, timeout=120).stdout
    rows = [tuple(map(int, m.groups())) for m in map(_ROW.match, out.splitlines()) if m]
    return {i: (frames, nbytes) for i, (frames, nbytes) in enumerate(rows) if frames}


def per_interval(ts: pd.DataFrame, interval: float, packets: pd.Series, nbytes: pd.Series) -> dict[int, tuple[int, int]]:
    index = ((ts["interval_start"] - ts["interval_start"].min()) / interval).round().astype(int)
    sums = pd.DataFrame({"i": index, "p": packets, "b": nbytes}).groupby("i").sum()
    return {int(i): (int(r.p), int(r.b)) for i, r in sums.iterrows() if r.p}


@pytest.mark.parametrize(("capture", "interval"), CASES, ids=[f"{c.name}-{i}s" for c, i in CASES])
def test_packets_and_bytes_per_interval_are_tsharks(tmp_path: Path, tshark: str, capture: Path, interval: float) -> None:
    assert main(["classify", str(capture), "-o", str(tmp_path), "-q", "--interval", str(interval)]) == 0
    ts = pd.read_csv(tmp_path / "timeseries.csv", keep_default_na=False)
    assert list(ts.columns) == schema.names(schema.with_readable_times(schema.TIMESERIES))
    expected = io_stat(tshark, capture, interval)
    assert len(expected) > 2
    assert per_interval(ts, interval, ts["packets"], ts["bytes"]) == expected
    first = pd.read_csv(tmp_path / "capture.csv")["first_ts"].iloc[0]
    assert ts["interval_start"].min() == pytest.approx(first, abs=1e-6)
    # each flow is counted in every interval it had packets in, not only its first
    flows = pd.read_csv(tmp_path / "flows.csv")
    spanning = flows[(flows["last_ts"] - flows["first_ts"]) > interval]
    assert ts["flows"].sum() > len(flows) or spanning.empty


def test_the_servers_bytes_per_interval_are_tsharks(tmp_path: Path, tshark: str) -> None:
    """What the Exchange server sent per interval: s2c of inbound flows, c2s of outbound ones."""
    capture, interval, server = CORPUS / "zeek" / "mapi.pcap", 0.5, "192.168.0.2"
    result = pcapclass.classify_file(capture, servers=[server], interval=interval)
    ts = result.timeseries
    inbound, outbound = ts["direction"] == "inbound", ts["direction"] == "outbound"
    sent = ts["packets_s2c"].where(inbound, 0) + ts["packets_c2s"].where(outbound, 0)
    sent_bytes = ts["bytes_s2c"].where(inbound, 0) + ts["bytes_c2s"].where(outbound, 0)
    assert per_interval(ts, interval, sent, sent_bytes) == io_stat(tshark, capture, interval, f"ip.src=={server}")


def test_spilled_blocks_give_the_same_time_series(tmp_path: Path) -> None:
    captures = [CORPUS / "zeek" / "mapi.pcap", FIXTURES / "idle_split.pcap", FIXTURES / "exchange_services.pcap"]
    results = []
    for spill in (None, 3):
        clf = Classifier(interval=1.0)
        if spill:
            clf.store.spill_flows = spill
        for path in captures:
            clf.read(path)
        results.append(clf.write(tmp_path / str(spill), fmt=pcapclass.Format.PARQUET))
        clf.close()
    whole, blocks = (r.timeseries for r in results)
    pd.testing.assert_frame_equal(whole, blocks, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "3" / "timeseries.parquet"), blocks, check_exact=True)
    # the intervals add up to the breakdown
    totals = whole.groupby(["service", "direction"])[["flows", "packets", "bytes"]].sum()
    breakdown = results[0].breakdown.set_index(["service", "direction"])
    assert (totals.loc[breakdown.index, ["packets", "bytes"]] == breakdown[["packets", "bytes"]]).all().all()
    assert (totals.loc[breakdown.index, "flows"] >= breakdown["flows"]).all()


def test_a_bad_interval_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["classify", str(FIXTURES / "idle_split.pcap"), "-o", str(tmp_path), "--interval", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("pcapclass classify: error: argument --interval: ")
