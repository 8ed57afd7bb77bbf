"""The capture readers against tshark (count, time, lengths, link type) and scapy (bytes).

(b) every readable fixture and corpus copy: pcapclass.sources.open_capture yields the packets tshark
reads, with the same wire and captured lengths, the same nanosecond timestamps (tshark's
frame.time_epoch parsed exactly) and link types, and the same bytes scapy's raw readers return --
also when read through a tiny chunk size, so that records straddle the reader's window.
(e) property tests: random valid pcap/pcapng bytes round-trip exactly.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import logging
import random
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, GOOD_CAPTURES, REPO, capture_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import WTAP_ENCAP_BY_LINKTYPE, tshark_packets

INT64_MAX = np.iinfo(np.int64).max


def _make_fixtures():
    if "make_fixtures" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_fixtures", REPO / "scripts" / "make_fixtures.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_fixtures"] = module
        spec.loader.exec_module(module)
    return sys.modules["make_fixtures"]


def read_all(path, chunk_size: int | None = None) -> dict:
    """Every packet open_capture yields, as plain arrays and a list of bytes (copied per batch)."""
    from pcapclass.sources import open_capture

    kw = {}
    if chunk_size is not None:
        assert "chunk_size" in inspect.signature(open_capture).parameters, "open_capture takes no chunk_size"
        kw["chunk_size"] = chunk_size
    cols = {k: [] for k in ("caplen", "wirelen", "ts_ns", "linktype")}
    data: list[bytes] = []
    count = 0
    for batch in open_capture(path, **kw):
        n = len(batch)
        assert batch.first_packet == count, "first_packet must number packets continuously across batches"
        for k, parts in cols.items():
            arr = getattr(batch, k)
            assert arr.shape == (n,)
            parts.append(np.array(arr, dtype=np.int64))
        offs, caps, buf = batch.offset, batch.caplen, batch.data
        data.extend(bytes(buf[int(o) : int(o) + int(c)]) for o, c in zip(offs, caps))
        count += n
    out = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in cols.items()}
    out["data"] = data
    return out


def scapy_bytes(path: Path) -> list[bytes]:
    logging.getLogger("scapy").setLevel(logging.ERROR)
    from scapy.utils import RawPcapReader

    with RawPcapReader(str(path)) as reader:  # dispatches to the pcapng reader; handles gzip
        return [bytes(pkt) for pkt, _meta in reader]


def compare_with_tshark(path: Path, got: dict) -> None:
    pk = tshark_packets(path)
    assert len(got["wirelen"]) == len(pk), f"packets: pcapclass {len(got['wirelen'])}, tshark {len(pk)}"
    np.testing.assert_array_equal(got["wirelen"], pk["wirelen"].to_numpy(), err_msg="wire lengths")
    np.testing.assert_array_equal(got["caplen"], pk["caplen"].to_numpy(), err_msg="captured lengths")
    # times: exact nanoseconds where tshark has one (Simple Packet Blocks have none) and it fits int64
    bad = []
    for i, (ours, theirs) in enumerate(zip(got["ts_ns"].tolist(), pk["ts_ns"].tolist())):
        if theirs is None or not -INT64_MAX <= theirs <= INT64_MAX:
            continue
        if ours != theirs:
            bad.append(f"packet {i + 1}: pcapclass {ours}, tshark {theirs} (diff {ours - theirs} ns)")
    assert not bad, f"{len(bad)} timestamps differ:\n" + "\n".join(bad[:10])
    encap = [WTAP_ENCAP_BY_LINKTYPE.get(int(lt), f"unmapped linktype {int(lt)}") for lt in got["linktype"]]
    assert encap == pk["encap"].tolist(), "link types (as tshark's WTAP encapsulations)"


@pytest.mark.parametrize("path", GOOD_CAPTURES, ids=capture_id)
def test_reader_matches_tshark(tshark, path):
    got = read_all(path)
    compare_with_tshark(path, got)
    assert got["data"] == scapy_bytes(path), "packet bytes differ from scapy's raw reader"


SMALL_CHUNK_CASES = [
    "exchange_services.pcap",
    "exchange_services.pcap.gz",
    "pcap_be_nsec.pcap",
    "pcapng_multi_if.pcapng",
    "pcapng_multi_if_be.pcapng",
    "pcapng_two_sections.pcapng",
    "corpus/zeek/mapi.pcap",
    "corpus/zeek/modify-request.pcapng",
]


@pytest.mark.parametrize("chunk_size", [64, 1000, 4096])
@pytest.mark.parametrize("name", SMALL_CHUNK_CASES)
def test_reader_with_small_chunks(tshark, name, chunk_size):
    """Records straddling chunk boundaries (and larger than a chunk) read the same."""
    path = FIXTURES / name
    got = read_all(path, chunk_size=chunk_size)
    compare_with_tshark(path, got)
    assert got["data"] == scapy_bytes(path)


def test_stdin_is_read_like_the_file(tshark, monkeypatch):
    """``-`` reads stdin (gzip included) and gives what the file gives."""
    path = FIXTURES / "exchange_services.pcap.gz"

    class FakeStdin:
        buffer = io.BufferedReader(io.FileIO(str(path), "rb"))

    monkeypatch.setattr(sys, "stdin", FakeStdin())
    got = read_all("-")
    want = read_all(path)
    for k in ("caplen", "wirelen", "ts_ns", "linktype"):
        np.testing.assert_array_equal(got[k], want[k])
    assert got["data"] == want["data"]


def test_timestamp_outside_int64_is_not_silently_wrapped(tshark):
    """nfstream's dhcp_big_endian.pcapng has EPB times around the year 151991 (a writer put seconds
    in the high word): 4.7e21 ns does not fit int64. Whatever the reader does (raise, clamp, flag),
    it must not return the value wrapped modulo 2**64."""
    path = FIXTURES / "corpus" / "nfstream" / "dhcp_big_endian.pcapng"
    got = read_all(path)
    theirs = tshark_packets(path)["ts_ns"].tolist()
    wrapped = [
        (i + 1, int(o), t)
        for i, (o, t) in enumerate(zip(got["ts_ns"].tolist(), theirs))
        if t is not None and int(o) != t and (t - int(o)) % 2**64 == 0
    ]
    assert not wrapped, f"int64 wrap-around (packet, pcapclass ns, true ns): {wrapped}"


# -- (e) property tests -------------------------------------------------------------------------

record_sizes = st.one_of(st.integers(0, 200), st.integers(1400, 1600), st.integers(60_000, 70_000))


@st.composite
def pcap_captures(draw):
    big_endian, nsec = draw(st.booleans()), draw(st.booleans())
    sizes = draw(st.lists(record_sizes, max_size=30))
    rng = random.Random(draw(st.integers(0, 2**32)))
    frac_max = 10**9 if nsec else 10**6
    recs = []
    for size in sizes:
        sec = draw(st.integers(0, 2**32 - 1))
        frac = draw(st.integers(0, frac_max - 1))
        extra = draw(st.integers(0, 100))
        recs.append((sec, frac, rng.randbytes(size), size + extra))
    return big_endian, nsec, recs


def _write(tmp: Path, data: bytes) -> Path:
    path = tmp / "capture"
    path.write_bytes(data)
    return path


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(capture=pcap_captures(), chunk=st.sampled_from([None, 100, 4096]))
def test_random_pcap_round_trips(capture, chunk):
    import struct

    big_endian, nsec, recs = capture
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    data = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 262144, 1)
    for sec, frac, payload, wirelen in recs:
        data += struct.pack(e + "IIII", sec, frac, len(payload), wirelen) + payload
    with tempfile.TemporaryDirectory() as tmp:
        got = read_all(_write(Path(tmp), data), chunk_size=chunk)
    assert len(got["data"]) == len(recs)
    assert got["data"] == [r[2] for r in recs]
    assert got["caplen"].tolist() == [len(r[2]) for r in recs]
    assert got["wirelen"].tolist() == [r[3] for r in recs]
    scale = 1 if nsec else 1000
    assert got["ts_ns"].tolist() == [r[0] * 1_000_000_000 + r[1] * scale for r in recs]
    assert set(got["linktype"].tolist()) <= {1}


@st.composite
def pcapng_captures(draw):
    big_endian = draw(st.booleans())
    resolutions = draw(st.lists(st.sampled_from([6, 9, 3, 0x80 | 20]), min_size=1, max_size=3))
    linktypes = draw(st.lists(st.sampled_from([1, 101, 113]), min_size=len(resolutions), max_size=len(resolutions)))
    rng = random.Random(draw(st.integers(0, 2**32)))
    packets = []
    for size in draw(st.lists(record_sizes, max_size=25)):
        iface = draw(st.integers(0, len(resolutions) - 1))
        # times up to 2096 (representable as int64 ns), expressed in the interface's units
        ns = draw(st.integers(0, 4_000_000_000 * 10**9))
        res = resolutions[iface]
        ticks = (ns << (res & 0x7F)) // 10**9 if res & 0x80 else ns * 10**res // 10**9
        kind = draw(st.sampled_from(["epb", "epb", "epb", "spb"]))
        packets.append((kind, iface, ticks, rng.randbytes(size), size + draw(st.integers(0, 50))))
    return big_endian, resolutions, linktypes, packets


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(capture=pcapng_captures(), chunk=st.sampled_from([None, 100, 4096]))
def test_random_pcapng_round_trips(capture, chunk):
    mf = _make_fixtures()
    big_endian, resolutions, linktypes, packets = capture
    w = mf.Pcapng(big_endian)
    data = w.shb()
    for res, lt in zip(resolutions, linktypes):
        data += w.idb(lt, 0, [(mf.IF_TSRESOL, w.u8(res))])
    want_ts, want_lt, want_wire, want_data = [], [], [], []
    prev_ts = None
    for kind, iface, ticks, payload, wirelen in packets:
        if kind == "spb":
            # an SPB belongs to interface 0 and has no time; its captured length is
            # min(original length, snaplen of interface 0) and snaplen 0 means no limit, so an
            # untruncated SPB holds exactly its original length
            data += w.spb(mf.Rec(0, payload, len(payload)))
            want_ts.append(prev_ts)
            want_lt.append(linktypes[0])
            want_wire.append(len(payload))
        else:
            data += w.epb(iface, ticks, mf.Rec(0, payload, wirelen))
            res = resolutions[iface]
            ts = (ticks * 10**9) >> (res & 0x7F) if res & 0x80 else ticks * 10**9 // 10**res
            want_ts.append(ts)
            prev_ts = ts
            want_lt.append(linktypes[iface])
            want_wire.append(wirelen)
        want_data.append(payload)
    with tempfile.TemporaryDirectory() as tmp:
        got = read_all(_write(Path(tmp), data), chunk_size=chunk)
    assert got["data"] == want_data
    assert got["wirelen"].tolist() == want_wire
    assert got["linktype"].tolist() == want_lt
    # SPB times are unspecified (no timestamp in the block): compare EPB times only
    ours = got["ts_ns"].tolist()
    for i, t in enumerate(want_ts):
        if packets[i][0] == "epb":
            assert ours[i] == t, (i, packets[i][:3], ours[i], t)


def test_caplen_over_snaplen_is_read_and_counted():
    """A record longer than the header's snaplen is read whole (tshark reads all 5) and counted once."""
    from pcapclass.sources import CaptureFile

    cap = CaptureFile(FIXTURES / "caplen_over_snaplen.pcap")
    caplens = [int(c) for b in cap for c in b.caplen]
    assert caplens.count(1500) == 1 and len(caplens) == 5
    assert cap.anomalies.caplen_over_snaplen == 1


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_obsolete_packet_blocks_read_as_tshark_reads_them(tshark, tmp_path, order):
    """Packet Blocks of the obsolete type 2 (draft-ietf-opsawg-pcapng Appendix A: a 16-bit
    interface id, then a 16-bit drops count, here 3) among Enhanced Packet Blocks, on two interfaces
    (microseconds, and if_tsresol 2^-20 s), in both byte orders: times, lengths and link types
    as tshark reads them, bytes as written."""

    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack(order + "II", btype, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))

    shb = block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb_usec = block(1, struct.pack(order + "HHI", 1, 0, 0))
    idb_binary = block(1, struct.pack(order + "HHI", 1, 0, 0) + struct.pack(order + "HHB3x", 9, 1, 0x80 | 20) + struct.pack(order + "HH", 0, 0))
    frames = [bytes(range(i, i + 60 + 7 * i)) for i in range(4)]
    ticks = [1_700_000_000_123_456, (1_700_000_001 << 20) + 777, 1_700_000_002_000_001, (1_700_000_003 << 20) + (1 << 19)]

    def pb(iface: int, t: int, frame: bytes) -> bytes:
        return block(2, struct.pack(order + "HHIIII", iface, 3, t >> 32, t & 0xFFFFFFFF, len(frame), len(frame) + 4) + frame)

    def epb(iface: int, t: int, frame: bytes) -> bytes:
        return block(6, struct.pack(order + "IIIII", iface, t >> 32, t & 0xFFFFFFFF, len(frame), len(frame)) + frame)

    path = tmp_path / f"obsolete_{'le' if order == '<' else 'be'}.pcapng"
    path.write_bytes(shb + idb_usec + idb_binary + pb(0, ticks[0], frames[0]) + pb(1, ticks[1], frames[1])
                     + epb(0, ticks[2], frames[2]) + pb(1, ticks[3], frames[3]))  # fmt: skip
    got = read_all(path)
    compare_with_tshark(path, got)
    assert got["data"] == frames


@pytest.mark.parametrize(("second", "message"), [
    (struct.pack("<IIIII", 3, 0, 1000, 60, 60), "packet block names interface 3, but only 1 are described"),
    (struct.pack("<IIIII", 0, 0, 1000, 200, 60), "packet block claims 200 captured bytes in a 92-byte block: corrupt framing"),
], ids=["undescribed-interface", "caplen-past-block"])  # fmt: skip
def test_a_bad_packet_block_ends_the_reading_at_its_offset(tmp_path, second, message):
    """The second of two Enhanced Packet Blocks is bad: the first packet is read, the error
    names the bad block's offset (section header 28 bytes, interface 20, first block 92: byte
    140), its packet number and what is wrong."""
    from pcapclass.errors import CaptureError
    from pcapclass.sources import open_capture

    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    path = tmp_path / "bad_block.pcapng"
    path.write_bytes(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) + block(1, struct.pack("<HHI", 1, 0, 0))
                     + block(6, struct.pack("<IIIII", 0, 0, 1000, 60, 60) + bytes(60)) + block(6, second + bytes(60)))  # fmt: skip
    read = []
    with pytest.raises(CaptureError) as fault:
        for batch in open_capture(path):
            read.extend(batch.caplen.tolist())
    assert read == [60]
    assert (fault.value.offset, fault.value.packet) == (140, 2)
    assert message in str(fault.value)

@pytest.mark.parametrize("chunk_size", [64, 1000])
@pytest.mark.parametrize("name", ["exchange_services.pcap", "exchange_services.pcap.gz", "pcapng_multi_if.pcapng"])
def test_batches_stay_valid_for_keep_chunks(name, chunk_size):
    """With ``keep_chunks=k``, a batch still views its own packets' bytes while the next k-1
    chunks are read (what decoding ahead in a thread relies on): batches are read k-1 behind
    the reader, and the bytes are scapy's."""
    from pcapclass.sources import CaptureFile

    path = FIXTURES / name
    keep = 4
    held: list = []
    got: list[bytes] = []

    def take(b):
        got.extend(bytes(b.data[int(o) : int(o) + int(c)]) for o, c in zip(b.offset, b.caplen))

    for batch in CaptureFile(path, chunk_size=chunk_size, keep_chunks=keep):
        held.append(batch)
        if len(held) == keep - 1:  # the oldest held batch has lived through keep-2 more reads
            take(held.pop(0))
    for b in held:
        take(b)
    assert got == scapy_bytes(path)
