"""Live sources without namespaces: pipe latency, drop parsing, error messages, pcap writing."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pcapclass.cli import main
from pcapclass.errors import LiveCaptureError
from pcapclass.sources import CaptureFile
from pcapclass.sources.live import (
    BACKENDS,
    compact,
    describe_start_failure,
    list_interfaces,
    merge_batches,
    open_live,
    parse_drops,
)
from pcapclass.sources.writer import PcapWriter

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps" / "exchange_services.pcap"
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo needs root (or CAP_NET_RAW)")


def _record(i: int) -> bytes:
    frame = bytes(60)
    return struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame


def test_low_latency_pipe_returns_each_record_as_it_arrives() -> None:
    """A slow writer's first record is handed out while the writer still holds the pipe open."""
    rfd, wfd = os.pipe()
    got: list[float] = []
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    with os.fdopen(rfd, "rb") as rd, os.fdopen(wfd, "wb", buffering=0) as wr:
        wr.write(header + _record(0))

        def later() -> None:
            time.sleep(1.0)
            wr.write(_record(1))
            wr.close()

        threading.Thread(target=later, daemon=True).start()
        start = time.monotonic()
        for batch in CaptureFile("pipe", stream=rd, low_latency=True, chunk_size=16 << 20):
            got.append(time.monotonic() - start)
            assert len(batch) == 1
    assert len(got) == 2
    assert got[0] < 0.5 <= got[1]


@pytest.mark.parametrize(
    ("stderr", "drops"),
    [
        ("Packets captured: 10\nPackets received/dropped on interface 'eth0': 10/0 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0) (100.0%)", 0),
        ("Packets received/dropped on interface 'Loopback: lo': 900/37 (pcap:37/dumpcap:0/flushed:0/ps_ifdrop:5) (96.0%)", 42),
        ("900 packets captured\n950 packets received by filter\n50 packets dropped by kernel", 50),
        ("9 packets captured\n9 packets received by filter\n1 packet dropped by kernel\n2 packets dropped by interface", 3),
        ("", 0),
    ],
)
def test_parse_drops(stderr: str, drops: int) -> None:
    assert parse_drops(stderr) == drops


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("dumpcap: You don't have permission to capture on that device\n(socket: Operation not permitted)", "CAP_NET_RAW"),
        ("tcpdump: eth0: You don't have permission to perform this capture on that device", "wireshark"),
        ("dumpcap: There is no device named \"nosuch0\".\n(No such device exists)", "the interfaces here are: "),
        (("dumpcap: Invalid capture filter \"tcp port\" for interface 'lo'.\n\nThat string isn't a valid capture filter "
          "(can't parse filter expression: syntax error).\nSee the User's Guide"), "syntax error"),
        ("tcpdump: can't parse filter expression: syntax error", "bad capture filter: can't parse filter expression"),
        ("dumpcap: The capture session could not be initiated (boom)", "could not capture on eth0: The capture session"),
    ],
)
def test_start_failures_are_explained(stderr: str, expected: str) -> None:
    err = describe_start_failure(stderr, interface="eth0", backend=stderr.split(":")[0])
    assert expected in str(err)


def test_unknown_interface_lists_the_real_ones(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["live", "-i", "nosuch0", "-o", str(tmp_path)]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such interface 'nosuch0'" in err and "lo" in err


@ROOT_ONLY
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_filter_gives_the_compilers_message(backend: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["live", "-i", "lo", "-f", "tcp port", "--backend", backend, "-o", str(tmp_path), "-q"]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad capture filter" in err and "syntax error" in err


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(LiveCaptureError, match="unknown backend"):
        open_live("lo", backend="pcapy")


def test_interfaces_command_lists_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["interfaces"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[0] == "lo" for line in out.splitlines()[1:])
    assert "lo" in [i.name for i in list_interfaces()]


def test_pcap_writer_round_trip(tmp_path: Path) -> None:
    """Batches written (merged from owned copies) read back packet for packet."""
    batches = [compact(b) for b in CaptureFile(FIXTURE, chunk_size=4096)]
    assert len(batches) > 1
    whole = merge_batches(batches)
    out = tmp_path / "out.pcap"
    with PcapWriter(out) as w:
        w.write(whole)
    back = merge_batches([compact(b) for b in CaptureFile(out)])
    for col in ("caplen", "wirelen", "ts_ns", "linktype"):
        assert np.array_equal(getattr(back, col), getattr(whole, col)), col
    for i in range(len(whole)):
        a = whole.data[whole.offset[i] : whole.offset[i] + whole.caplen[i]]
        b = back.data[back.offset[i] : back.offset[i] + back.caplen[i]]
        assert a.tobytes() == b.tobytes()


def test_pcap_writer_without_packets_writes_a_readable_empty_capture(tmp_path: Path) -> None:
    out = tmp_path / "empty.pcap"
    PcapWriter(out).close()
    assert list(CaptureFile(out)) == []
