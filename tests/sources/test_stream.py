"""gzip-compressed captures: from a pipe, cut short, with bytes after the data, in several members.

The expected packet counts are tshark's reading of the same bytes, and the expected offsets
are the lengths zlib itself decompresses from them (zlib is what tshark reads gzip with).
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import struct
import subprocess
import sys
import zlib

import pytest
from conftest import FIXTURES
from oracle import tshark_packet_count

import pcapclass
from pcapclass.errors import InvalidCaptureError

GZ = FIXTURES / "exchange_services.pcap.gz"
PACKETS = 310  # tshark -r exchange_services.pcap.gz | wc -l


def _decompressible(data: bytes) -> int:
    """How many bytes zlib gets out of gzip ``data`` cut short (or followed by anything)."""
    return len(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data))


def _whole_records(pcap: bytes) -> int:
    """Whole pcap records in ``pcap`` (little-endian file header of 24 bytes, 16 per record)."""
    pos, n = 24, 0
    while pos + 16 <= len(pcap):
        pos += 16 + struct.unpack_from("<I", pcap, pos + 8)[0]
        if pos > len(pcap):
            break
        n += 1
    return n


@pytest.mark.parametrize("read_size", [3, 4096, 1 << 20])
def test_gzip_stream_gives_the_bytes_gzip_gives_whatever_the_read_size(read_size):
    """Long runs and repeats (deflate matches far longer than a read) across two members."""
    from pcapclass.sources.stream import GzipStream

    rnd = random.Random(read_size)
    plain = b"".join(rnd.choice([bytes(rnd.randrange(1, 70_000)), rnd.randbytes(300) * 200, rnd.randbytes(5000)]) for _ in range(12))
    data = gzip.compress(plain[:123_457], compresslevel=9) + gzip.compress(plain[123_457:], compresslevel=1)
    stream = GzipStream(io.BufferedReader(io.BytesIO(data)), path="mem")
    got, buf = [], bytearray(read_size)
    while n := stream.readinto(buf):
        got.append(bytes(buf[:n]))
    assert b"".join(got) == plain and stream.consumed == len(data) and stream.trailing_bytes == 0


def test_gzip_on_a_pipe_is_read(tmp_path, tshark):
    """``cat x.pcap.gz | pcapclass classify -``: a pipe cannot tell its position."""
    assert tshark_packet_count(GZ) == PACKETS
    proc = subprocess.run([sys.executable, "-m", "pcapclass", "classify", "-", "-o", "out", "-q"], input=GZ.read_bytes(),
                          capture_output=True, timeout=120, check=False, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    with (tmp_path / "out" / "capture.csv").open(newline="") as f:
        (row,) = csv.DictReader(f)
    assert (row["format"], int(row["packets"]), row["partial"]) == ("pcap", PACKETS, "false")


@pytest.mark.parametrize("cut", [300, 3000, 12_345, 25_000, len(GZ.read_bytes()) - 8])
def test_a_truncated_gzip_keeps_the_packets_before_the_cut(tmp_path, tshark, cut):
    path = tmp_path / "cut.pcap.gz"
    data = GZ.read_bytes()[:cut]
    path.write_bytes(data)
    r = pcapclass.classify_file(path)
    assert r.stats["packets"] == tshark_packet_count(path, allow_errors=True)
    assert r.partial and isinstance(r.error, InvalidCaptureError)
    assert r.error.offset == _decompressible(data)
    assert r.error.packet == r.stats["packets"] + 1
    assert "truncated gzip" in str(r.error) and "decompressed" in str(r.error)


@pytest.mark.parametrize("trailer", [b"garbage\n", bytes(512), b"\x1f", b"PK\x03\x04" + bytes(100)], ids=["text", "zeros", "half-magic", "zip"])
def test_bytes_after_the_gzip_data_are_ignored_and_counted(tmp_path, tshark, trailer):
    """gzip(1) decompresses the same bytes with or without the trailer and ignores it ("trailing
    garbage ignored"); tshark appends it to the decompressed data and reads it as a record (a
    3,182,231,298-byte one for b"garbage\\n"). pcapclass follows gzip: the 310 packets tshark reads
    in the gzip data itself, and the trailer counted."""
    path = tmp_path / "trailing.pcap.gz"
    path.write_bytes(GZ.read_bytes() + trailer)
    assert tshark_packet_count(GZ) == PACKETS
    assert _decompressible(path.read_bytes()) == len(gzip.decompress(GZ.read_bytes()))
    r = pcapclass.classify_file(path)
    assert r.error is None
    assert r.stats["packets"] == PACKETS
    assert r.stats["gzip_trailing_bytes"] == len(trailer)


def test_trailing_bytes_are_a_warning_on_the_command_line(tmp_path):
    path = tmp_path / "trailing.pcap.gz"
    path.write_bytes(GZ.read_bytes() + b"garbage\n")
    proc = subprocess.run([sys.executable, "-m", "pcapclass", "classify", str(path), "-o", "out", "-q"],
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [f"pcapclass: warning: {path}: read anyway, counted in capture.csv: 8 gzip_trailing_bytes"]


def test_gzip_members_are_read_one_after_another(tmp_path, tshark):
    """RFC 1952 §2.2: a gzip file is a series of members; a record may straddle two."""
    pcap = gzip.decompress(GZ.read_bytes())
    path = tmp_path / "members.pcap.gz"
    path.write_bytes(gzip.compress(pcap[:10_001]) + gzip.compress(pcap[10_001:30_000]) + gzip.compress(pcap[30_000:]))
    assert tshark_packet_count(path) == PACKETS
    r = pcapclass.classify_file(path)
    assert r.error is None and r.stats["packets"] == PACKETS and r.stats["gzip_trailing_bytes"] == 0


def test_a_damaged_gzip_member_is_a_fault_after_the_packets_before_it(tmp_path):
    """A flipped byte in the deflate data: what zlib decompresses before refusing it, fed a byte
    at a time, is kept."""
    data = bytearray(GZ.read_bytes())
    data[20_000] ^= 0xFF
    path = tmp_path / "damaged.pcap.gz"
    path.write_bytes(bytes(data))
    inflate, before = zlib.decompressobj(16 + zlib.MAX_WBITS), b""
    with pytest.raises(zlib.error):
        for i in range(len(data)):
            before += inflate.decompress(data[i : i + 1])
    r = pcapclass.classify_file(path)
    assert r.partial and "damaged gzip data" in str(r.error)
    assert r.error.offset == len(before)
    assert r.stats["packets"] == _whole_records(before) > 0


def _big_pcap(packets: int) -> bytes:
    """A little-endian microsecond pcap of UDP packets with random payloads (they do not compress)."""
    rnd = random.Random(16)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(packets):
        payload = rnd.randbytes(rnd.randrange(20, 200))
        udp = struct.pack(">HHHH", 1024 + i % 5000, 53, 8 + len(payload), 0) + payload
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\x0a\0\0\1", b"\x0a\0\0\2") + udp
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip
        out.append(struct.pack("<IIII", 1_700_000_000 + i // 1000, i % 1000 * 1000, len(frame), len(frame)) + frame)
    return b"".join(out)


def test_a_large_truncated_gzip_keeps_every_whole_packet(tmp_path):
    """Cut in the 3rd 4 MiB chunk of decompressed data: the chunk being filled is kept too."""
    pcap = _big_pcap(80_000)
    data = gzip.compress(pcap, compresslevel=1)
    cut = data[: len(data) * 3 // 4]
    path = tmp_path / "big.pcap.gz"
    path.write_bytes(cut)
    decompressed = _decompressible(cut)
    assert decompressed > 8 << 20
    r = pcapclass.classify_file(path, payload=False)
    assert r.stats["packets"] == _whole_records(pcap[:decompressed])
    assert r.error.offset == decompressed
