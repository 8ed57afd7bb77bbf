"""Crafted captures that once corrupted memory or read another record's bytes.

Each file is built here byte by byte from the pcap/pcapng layouts, so the expected outcome is
the spec's, not pcapclass's: a packet block shorter than its fixed fields is invalid framing
(draft-ietf-opsawg-pcapng §4.3, §4.4), and a packet's headers end where its captured bytes end.
The crafted files run in a child process, so that memory corruption shows as a signal instead
of taking the test run down.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pcapclass._decode import FLOW, TRUNCATED, decode_headers
from pcapclass._firstlook import WaitingFlows, follow_scan

EXIT_UNREADABLE = 3  # the fault comes before any packet
LINKTYPE_RAW = 101


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


SHB = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
IDB = _block(1, struct.pack("<HHI", 1, 0, 65535))
#: a Simple Packet Block whose total length, 12, leaves no room for its original-length field
TINY_SPB = struct.pack("<III", 3, 12, 12)
#: an Enhanced Packet Block of total length 12: none of its 20 bytes of fixed fields
TINY_EPB = struct.pack("<III", 6, 12, 12)


def _classify_in_child(path: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pcapclass", "classify", str(path), "-o", str(tmp / "out"), "-q"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp,
    )


@pytest.mark.parametrize("blocks", [10, 2_000, 300_000])
@pytest.mark.parametrize("tiny", [TINY_SPB, TINY_EPB], ids=["spb", "epb"])
def test_runs_of_blocks_below_their_minimum_length_are_one_error_not_a_crash(tmp_path, blocks, tiny):
    path = tmp_path / "tiny_blocks.pcapng"
    path.write_bytes(SHB + IDB + tiny * blocks)
    if blocks == 10 and tiny is TINY_SPB:
        assert path.stat().st_size == 168  # the file of the report
    proc = _classify_in_child(path, tmp_path)
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {proc.stderr[-500:]}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(path) in lines[0]
    assert f"byte {len(SHB) + len(IDB) + 4}" in lines[0], lines[0]  # the first tiny block's length field
    assert "below" in lines[0]
    assert proc.returncode == EXIT_UNREADABLE


def test_tiny_blocks_under_the_api_raise_the_capture_error(tmp_path):
    path = tmp_path / "tiny_blocks.pcapng"
    path.write_bytes(SHB + IDB + TINY_SPB * 2_000)
    code = (
        "import sys, pcapclass\n"
        f"r = pcapclass.classify_file({str(path)!r})\n"
        "print(type(r.error).__name__, r.error.offset, r.partial, int(r.stats['packets']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["InvalidCaptureError", str(len(SHB) + len(IDB) + 4), "True", "0"]


def _ipv6_cut_at_40(next_header: int) -> bytes:
    """An IPv6 header (40 bytes, payload length 20) whose extension chain starts past the cut."""
    return bytes([0x60, 0, 0, 0]) + struct.pack(">HBB", 20, next_header, 64) + bytes(15) + b"\x01" + bytes(15) + b"\x02"


def test_decode_reads_no_byte_past_a_packets_captured_bytes():
    """IPv6 cut right after its 40-byte header, next header 0 (hop-by-hop): the hop-by-hop header
    was not captured, so the packet is truncated whatever the next record's bytes are. Before the
    fix the chain was read from the bytes that follow (here: a hop-by-hop header naming TCP)."""
    packet = _ipv6_cut_at_40(0)
    following = bytes([6, 0, 0, 0, 0, 0, 0, 0]) + struct.pack(">HH", 1234, 25) + bytes(40)
    for tail in (following, bytes(len(following)), b"\xff" * len(following)):
        data = np.frombuffer(packet + tail, dtype=np.uint8)
        out = decode_headers(data, np.array([0]), np.array([40]), np.array([LINKTYPE_RAW]))
        status, proto, sport, dport = out[0][0], out[1][0], out[6][0], out[7][0]
        assert (status, sport, dport) == (TRUNCATED, 0, 0), (tail[:8], status, proto, sport, dport)
    whole = packet[:6] + bytes([6]) + packet[7:] + struct.pack(">HHIIBBHHH", 1234, 25, 0, 0, 0x50, 2, 0, 0, 0)
    out = decode_headers(np.frombuffer(whole, dtype=np.uint8), np.array([0]), np.array([60]), np.array([LINKTYPE_RAW]))
    assert (out[0][0], out[1][0], out[6][0], out[7][0]) == (FLOW, 6, 1234, 25)


def test_a_cut_record_classifies_the_same_whatever_the_next_record_holds(tmp_path):
    """Two files that differ only in the second record's timestamp (the bytes right after the
    cut IPv6 packet) must give the same counts."""
    import pcapclass

    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    packet = _ipv6_cut_at_40(0)
    second = _ipv6_cut_at_40(59)  # no next header: a whole packet of its own
    results = []
    for ts in (0x00060000, 0x00000006, 0x11223344):
        rec1 = struct.pack("<IIII", 1, 0, len(packet), 60) + packet
        rec2 = struct.pack("<IIII", ts, 0, len(second), len(second)) + second
        path = tmp_path / f"cut_{ts:x}.pcap"
        path.write_bytes(header + rec1 + rec2)
        stats = pcapclass.classify_file(path).stats
        results.append((int(stats["truncated_packets"]), int(stats["flows"])))
    assert results[0][0] == 1  # the cut packet, and only it
    assert results[1:] == results[:1] * 2


def test_follow_scan_reads_a_short_payload_no_further_than_its_end():
    """A 3-byte payload of a followed flow that starts like a bind_ack header, followed in the
    buffer by bytes that would make it a whole 3-byte bind_ack (little-endian drep at byte 4,
    frag_length 3 at bytes 8-9). Read within its own 3 bytes it is no whole PDU, so Python must
    look at it; before the fix the next bytes made it a skippable PDU and it was passed over."""
    from pcapclass.evidence.following import PTYPE_USED as _PTYPE_USED

    assert not _PTYPE_USED[12]  # following learns nothing from a bind_ack
    payload = bytes([5, 0, 12])
    after = bytes([0, 0x10, 0, 0, 0, 3, 0]) + bytes(8)  # bytes 3..: drep 0x10 at 4, frag_length 3 at 8
    data = np.frombuffer(payload + after, dtype=np.uint8)
    followed = np.zeros(16, dtype=np.uint16)
    followed[7] = 1
    none_h = np.zeros(0, dtype=np.uint64)
    look, ended = follow_scan(data, np.array([0]), np.array([7], dtype=np.uint64), np.array([0]), np.array([3]), followed,
                              WaitingFlows(followed), np.array([7], dtype=np.uint64), none_h, np.zeros(0, dtype=np.int64), none_h,
                              _PTYPE_USED.view(np.uint8))  # fmt: skip
    assert look.tolist() == [0]
    assert ended.tolist() == []


# -- nonsense that is read and counted (capture.csv's anomaly columns) -------------------------

_UDP_FRAME = (b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"  # Ethernet: dst, src, IPv4
              + struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, b"\x0a\0\0\1", b"\x0a\0\0\2")  # IPv4, UDP
              + struct.pack(">HHHH", 1000, 53, 8, 0))  # fmt: skip


def _pcap(magic: int, records: list[tuple[int, int, int]]) -> bytes:
    """A little-endian pcap of _UDP_FRAME records given as (ts_sec, ts_fraction, orig_len)."""
    header = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    return header + b"".join(struct.pack("<IIII", s, f, len(_UDP_FRAME), o) + _UDP_FRAME for s, f, o in records)


def _tshark_expert(path: Path, text: str) -> int:
    proc = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "_ws.expert.message"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return sum(text in line for line in proc.stdout.splitlines())


@pytest.mark.parametrize(("magic", "second"), [(0xA1B2C3D4, 10**6), (0xA1B23C4D, 10**9)], ids=["usec", "nsec"])
def test_a_fraction_of_a_second_or_more_is_carried_and_counted(tmp_path, tshark, magic, second):
    import pcapclass
    from pcapclass.sources import open_capture

    fractions = [5, second - 1, second, second + second // 2, 0xFFFFFFFF]
    path = tmp_path / "fractions.pcap"
    path.write_bytes(_pcap(magic, [(100, f, len(_UDP_FRAME)) for f in fractions]))
    assert _tshark_expert(path, "Fractional second") == 3
    ts = np.concatenate([b.ts_ns for b in open_capture(path)])
    assert ts.tolist() == [100 * 10**9 + f * (10**9 // second) for f in fractions]
    assert pcapclass.classify_file(path).stats["ts_fraction_invalid"] == 3


def test_an_original_length_below_the_captured_length_is_counted(tmp_path, tshark):
    import pcapclass

    lengths = [len(_UDP_FRAME), 10, 0, 0xFFFFFFFF, len(_UDP_FRAME) - 1]
    path = tmp_path / "lengths.pcap"
    path.write_bytes(_pcap(0xA1B2C3D4, [(100, 0, o) for o in lengths]))
    assert _tshark_expert(path, "Frame length is less than captured length") == 3
    stats = pcapclass.classify_file(path).stats
    assert stats["wirelen_below_caplen"] == 3
    assert stats["bytes"] == sum(lengths)  # the original lengths as recorded, as tshark's frame.len


def _pcapng_block(btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def test_an_epb_timestamp_with_its_high_bit_set_is_a_time_not_no_time(tmp_path):
    """draft-ietf-opsawg-pcapng §4.3: the timestamp is an unsigned 64-bit tick count. 2^63 + 5
    microseconds is past int64 nanoseconds (saturated, counted); 2^63 + 5 picoseconds is
    9,223,372.036854775 s. Before, the high bit made it "no timestamp" and the packet took the
    previous packet's time."""
    from pcapclass.sources import open_capture

    def epb(iface: int, ticks: int) -> bytes:
        return _pcapng_block(6, struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(_UDP_FRAME), len(_UDP_FRAME)) + _UDP_FRAME)

    idb_usec = _pcapng_block(1, struct.pack("<HHI", 1, 0, 0))
    idb_psec = _pcapng_block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HHB3x", 9, 1, 12) + struct.pack("<HH", 0, 0))
    high = (1 << 63) + 5
    path = tmp_path / "high_bit.pcapng"
    path.write_bytes(SHB + idb_usec + idb_psec + epb(0, 1_700_000_000_000_000) + epb(0, high) + epb(1, high))
    cap = open_capture(path)
    ts = np.concatenate([b.ts_ns for b in cap])
    assert ts.tolist() == [1_700_000_000 * 10**9, np.iinfo(np.int64).max, high // 1000]
    assert cap.anomalies.ts_out_of_range == 1


def _epb(iface: int, ticks: int, packet: bytes) -> bytes:
    body = struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(packet), len(packet)) + packet
    return _block(6, body + bytes(-len(body) % 4))


def _idb(*options: tuple[int, bytes], length_cut: int = 0) -> bytes:
    """An Ethernet interface description block with ``options``; ``length_cut`` shortens the
    first option's stated room so that it runs past the block."""
    body = struct.pack("<HHI", 1, 0, 65535)
    for code, value in options:
        body += struct.pack("<HH", code, len(value) + length_cut) + value + bytes(-len(value) % 4)
    return _block(1, body + struct.pack("<HH", 0, 0))


ETH_FRAME = bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(19)


@pytest.mark.parametrize(
    ("idb", "needle"),
    [
        (_block(1, b""), "interface description block total length 12 is below the 20 bytes"),  # the 12-byte IDB
        (_idb((9, bytes([30]))), "if_tsresol 10^-30"),  # exp10 > 18: no int64 nanoseconds
        (_idb((9, bytes([0x80 | 63]))), "if_tsresol 2^-63"),
        (_idb((14, struct.pack("<q", 1 << 62))), "if_tsoffset"),  # 1.5e11 years
        (_idb((9, bytes([6])), length_cut=200), "runs past the end of its block"),
    ],
    ids=["idb-12-bytes", "tsresol-exp10", "tsresol-exp2", "tsoffset", "option-overrun"],
)
def test_an_interface_block_pcapclass_cannot_read_is_one_line(tmp_path: Path, idb: bytes, needle: str) -> None:
    """Before, these raised OverflowError in the timestamp conversion, or took the link type
    from the next block; now each is one line naming the file and the block's offset."""
    path = tmp_path / "idb.pcapng"
    path.write_bytes(SHB + idb + _epb(0, 1_000_000, ETH_FRAME))
    proc = _classify_in_child(path, tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == EXIT_UNREADABLE and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(path) in lines[0] and needle in lines[0], lines[0]
    assert f"byte {len(SHB)}" in lines[0] or f"byte {len(SHB) + 4}" in lines[0], lines[0]


def test_an_original_length_no_link_carries_is_counted(tmp_path: Path) -> None:
    """Two records of one Ethernet frame, the second claiming an original length of 0xffffffff:
    read (as tshark reads it), and counted in capture.csv."""
    import pcapclass

    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    rec = lambda wire: struct.pack("<IIII", 1, 0, len(ETH_FRAME), wire) + ETH_FRAME
    path = tmp_path / "huge_wirelen.pcap"
    path.write_bytes(header + rec(len(ETH_FRAME)) + rec(0xFFFFFFFF))
    stats = pcapclass.classify_file(path).stats
    assert (stats["packets"], stats["wirelen_implausible"], stats["wirelen_below_caplen"]) == (2, 1, 0)
