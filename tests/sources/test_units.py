"""Work units against tshark: where a file is cut, and that the units read back the whole file.

Cut positions are derived from tshark's own record offsets (``frame.file_off``, shown with
``-o frame.show_file_off:TRUE``): a unit starts at the first packet record (pcapng: packet block
with a timestamp) at or after each multiple of the unit size. Packets read unit after unit must
be tshark's (time, lengths, link type) and scapy's bytes; errors must be bad/EXPECTED.csv's.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import random
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import BAD, FIXTURES, bad_cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import WTAP_ENCAP_BY_LINKTYPE, tshark_packets

from pcapclass.errors import CaptureError
from pcapclass.sources import open_capture, units
from pcapclass.sources.units import UnitCapture, split_capture

SPLIT_CASES = [
    "exchange_services.pcap",  # little-endian, microseconds
    "pcap_be_usec.pcap",
    "pcap_le_nsec.pcap",
    "pcap_be_nsec.pcap",
    "corpus/zeek/mapi.pcap",
    "corpus/zeek/dssetup_DsRoleGetPrimaryDomainInformation_standalone_workstation.cap",  # real, big-endian
    "pcapng_multi_if.pcapng",  # three interfaces, an SPB, blocks to skip
    "pcapng_multi_if_be.pcapng",
    "pcapng_two_sections.pcapng",  # LE section then BE section, interfaces renumbered
    "pcapng_tsresol.pcapng",
    "corpus/zeek/modify-request.pcapng",  # 126 interface descriptions
]


def tshark_offsets(path) -> list[int]:
    """Each packet's record (pcapng: block) offset; records without an encapsulation are not
    packets (pcapng Custom Blocks, as oracle.tshark_packets drops them)."""
    out = subprocess.run(["tshark", "-n", "-o", "frame.show_file_off:TRUE", "-r", str(path), "-T", "fields",
                          "-e", "frame.file_off", "-e", "frame.encap_type"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [int(off) for off, encap in (line.split("\t") for line in out.splitlines()) if encap]


def expected_cuts(offsets: list[int], can_cut: list[bool], unit_size: int) -> list[tuple[int, int]]:
    """(offset, packet index) of each unit after the first. A unit starts at the first record at
    or after a multiple of unit_size that may start one: at record i when a multiple lies after
    the previous such record and at or before i (never at the file's first record)."""
    cuts, previous = [], offsets[0]
    for i, off in enumerate(offsets[1:], 1):
        if can_cut[i]:
            if off // unit_size > previous // unit_size:
                cuts.append((off, i))
            previous = off
    return cuts


def read_units(units, chunk_size=4096):
    packets, consumed = [], 0
    for unit in units:
        with UnitCapture(unit, chunk_size=chunk_size) as capture:
            for batch in capture:
                assert batch.first_packet == len(packets), "batches numbered in the whole file"
                for i in range(len(batch)):
                    off, cap = int(batch.offset[i]), int(batch.caplen[i])
                    packets.append((int(batch.ts_ns[i]), int(batch.wirelen[i]), cap, int(batch.linktype[i]), bytes(batch.data[off : off + cap])))
            consumed += capture.consumed
    return packets, consumed


def scapy_bytes(path) -> list[bytes]:
    logging.getLogger("scapy").setLevel(logging.ERROR)
    from scapy.utils import RawPcapReader

    with RawPcapReader(str(path)) as reader:
        return [bytes(pkt) for pkt, _meta in reader]


def assert_like_tshark(path, packets) -> None:
    want = tshark_packets(path)
    assert len(packets) == len(want)
    ts, wirelen, caplen, linktype, data = zip(*packets) if packets else ([],) * 5
    assert list(wirelen) == want["wirelen"].tolist()
    assert list(caplen) == want["caplen"].tolist()
    assert [t for t, w in zip(ts, want["ts_ns"]) if w is not None] == [w for w in want["ts_ns"] if w is not None]
    assert [WTAP_ENCAP_BY_LINKTYPE[lt] for lt in linktype] == want["encap"].tolist()
    assert list(data) == scapy_bytes(path)


@pytest.mark.parametrize("unit_size", [1, 97, 500, 4096])
@pytest.mark.parametrize("name", SPLIT_CASES)
def test_units_cut_at_records_and_read_back_the_whole_file(tshark, name, unit_size):
    path = FIXTURES / name
    size = path.stat().st_size
    units = split_capture(path, unit_size=unit_size)
    offsets = tshark_offsets(path)
    can_cut = [ts is not None for ts in tshark_packets(path)["ts_ns"]]  # not before a Simple Packet Block
    assert [(u.start, u.first_packet) for u in units[1:]] == expected_cuts(offsets, can_cut, unit_size)
    assert [u.index for u in units] == list(range(len(units)))
    assert units[0].start == 0 and units[-1].end == size
    assert all(a.end == b.start for a, b in itertools.pairwise(units))
    if path.suffix != ".pcapng":
        assert all(u.head == ((0, 24),) for u in units[1:])  # the pcap file header
    packets, consumed = read_units(units)
    assert_like_tshark(path, packets)
    assert consumed == size


@pytest.mark.parametrize("walk_chunk", [64, 1000])
@pytest.mark.parametrize("name", ["corpus/zeek/mapi.pcap", "pcap_be_nsec.pcap", "pcapng_two_sections.pcapng", "corpus/zeek/modify-request.pcapng"])
def test_records_straddling_the_walk_window_cut_alike(monkeypatch, name, walk_chunk):
    path = FIXTURES / name
    want = split_capture(path, unit_size=300)
    monkeypatch.setattr(units, "WALK_CHUNK", walk_chunk)
    assert split_capture(path, unit_size=300) == want


def pcapng_block(btype: int, body: bytes) -> bytes:
    """A little-endian pcapng block: type, total length, body padded to 32 bits, total length."""
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def test_unit_after_a_second_interface_carries_it(tshark, tmp_path):
    """An interface described after packets: a unit starting after it reads its packets with its
    link type and timestamp resolution, because its head carries every IDB in force."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    ip = bytes(IP(src="10.0.1.15", dst="10.0.0.53", id=1) / UDP(sport=1034, dport=53) / (b"q" * 20))
    eth = bytes(Ether(src="02:00:00:00:01:15", dst="02:00:00:00:00:53") / IP(src="10.0.1.15", dst="10.0.0.53", id=2) / UDP(sport=1034, dport=53))

    def epb(iface: int, ticks: int, frame: bytes) -> bytes:
        # interface id, timestamp high and low words, captured length, original length, data
        return pcapng_block(6, struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame)

    shb = pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))  # BOM, version 1.0, length unknown
    idb0 = pcapng_block(1, struct.pack("<HHI", 1, 0, 0))  # Ethernet, snaplen 0, microseconds (default)
    # raw IP, if_tsresol (option 9, 1 byte) = 9: nanoseconds; opt_endofopt
    idb1 = pcapng_block(1, struct.pack("<HHI", 101, 0, 0) + struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0))
    t_us, t_ns = 1_146_560_400_000_000, 1_146_560_400_000_000_000
    blocks = [shb, idb0, epb(0, t_us + 1, eth), epb(0, t_us + 2, eth), idb1, epb(1, t_ns + 3_123, ip), epb(0, t_us + 4, eth), epb(1, t_ns + 5_456, ip)]
    path = tmp_path / "late_interface.pcapng"
    path.write_bytes(b"".join(blocks))
    idb1_at = sum(map(len, blocks[:4]))
    units = split_capture(path, unit_size=idb1_at + 1)  # a multiple inside the IDB: the cut moves to the next EPB
    after = units[1]
    assert (after.start, after.first_packet) == (idb1_at + len(idb1), 2)
    assert after.head == ((0, len(shb)), (len(shb), len(idb0)), (idb1_at, len(idb1)))
    packets, _ = read_units(units)
    assert_like_tshark(path, packets)
    with UnitCapture(after) as capture:
        first = next(iter(capture))
    assert (int(first.linktype[0]), int(first.ts_ns[0])) == (101, t_ns + 3_123)


def test_a_boundary_inside_a_record_moves_to_the_next_record(tshark):
    path = FIXTURES / "pcap_be_usec.pcap"
    offsets = tshark_offsets(path)  # 24, 102, 180, ...: record starts
    units = split_capture(path, unit_size=offsets[1] + 1)  # one byte into record 2's header
    assert [u.start for u in units[1:3]] == [offsets[2], offsets[3]]


FRAMING_FAULTS = [c for c in bad_cases() if c["expected_packets_before"] != "0"]


@pytest.mark.parametrize("unit_size", [1, 60])
@pytest.mark.parametrize("case", FRAMING_FAULTS, ids=lambda c: c["file"])
def test_a_fault_is_reported_where_the_whole_file_read_reports_it(case, unit_size):
    path = BAD / case["file"]
    with pytest.raises(CaptureError) as whole:
        for _ in open_capture(path):
            pass
    got = []
    with pytest.raises(CaptureError) as split:
        for unit in split_capture(path, unit_size=unit_size):
            with UnitCapture(unit) as capture:
                got.extend(int(n) for batch in capture for n in range(batch.first_packet, batch.first_packet + len(batch)))
    assert got == list(range(int(case["expected_packets_before"])))
    assert split.value.offset == int(case["expected_error_offset"])
    assert (type(split.value), str(split.value)) == (type(whole.value), str(whole.value))


@pytest.mark.parametrize("name", ["exchange_services.pcap.gz", "corpus/zeek/mime-header-size-limit.pcap.gz"])
def test_gzip_is_one_unit_read_whole(tshark, name):
    path = FIXTURES / name
    (unit,) = split_capture(path, unit_size=1)
    assert unit.whole and unit.first_packet == 0
    packets, consumed = read_units([unit])
    assert_like_tshark(path, packets)
    assert consumed == path.stat().st_size


@pytest.mark.parametrize("unit_size", [1, 1 << 20])  # walked, or too small to be
@pytest.mark.parametrize("name", ["not_a_capture.txt", "empty.pcap", "truncated_global_header.pcap", "unknown_linktype.pcap"])
def test_what_is_not_split_fails_as_the_whole_file_does(name, unit_size):
    (unit,) = split_capture(BAD / name, unit_size=unit_size)
    with pytest.raises(CaptureError) as whole:
        for _ in open_capture(BAD / name):
            pass
    with pytest.raises(CaptureError) as split:
        for _ in UnitCapture(unit):
            pass
    assert (type(split.value), str(split.value)) == (type(whole.value), str(whole.value))


def test_units_travel_by_pickle():
    units = split_capture(FIXTURES / "pcapng_two_sections.pcapng", unit_size=500)
    assert pickle.loads(pickle.dumps(units)) == units
    assert split_capture("-") == [pickle.loads(pickle.dumps(split_capture("-")[0]))]


# -- property tests: random captures, random unit sizes ------------------------------------------


def make_fixtures():
    import importlib.util
    import sys

    if "make_fixtures" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES.parents[2] / "scripts" / "make_fixtures.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_fixtures"] = module
        spec.loader.exec_module(module)
    return sys.modules["make_fixtures"]


payload_sizes = st.one_of(st.integers(0, 200), st.integers(1400, 1600), st.integers(60_000, 70_000))


@st.composite
def random_pcapngs(draw):
    """Sections of either byte order whose interfaces are described before and between packets,
    with Simple Packet Blocks and blocks to skip; returns the bytes and the packets' payloads."""
    mf = make_fixtures()
    rng = random.Random(draw(st.integers(0, 2**32)))
    data, payloads = b"", []
    for _section in range(draw(st.integers(1, 3))):
        w = mf.Pcapng(draw(st.booleans()))
        data += w.shb() + w.idb(1, 0)
        interfaces = 1
        for kind in draw(st.lists(st.sampled_from(["epb", "epb", "epb", "spb", "idb", "skip"]), max_size=20)):
            if kind == "idb":
                data += w.idb(draw(st.sampled_from([1, 101, 113])), 0, [(mf.IF_TSRESOL, w.u8(draw(st.sampled_from([6, 9]))))])
                interfaces += 1
            elif kind == "skip":
                data += w.custom(rng.randbytes(draw(st.integers(0, 40))))
            else:
                payload = rng.randbytes(draw(payload_sizes))
                rec = mf.Rec(0, payload, len(payload))
                ticks = draw(st.integers(0, 2**62))
                data += w.spb(rec) if kind == "spb" else w.epb(draw(st.integers(0, interfaces - 1)), ticks, rec)
                payloads.append(payload)
    return data, payloads


@st.composite
def random_pcaps(draw):
    mf = make_fixtures()
    rng = random.Random(draw(st.integers(0, 2**32)))
    big_endian, nsec = draw(st.booleans()), draw(st.booleans())
    payloads = [rng.randbytes(draw(payload_sizes)) for _ in range(draw(st.integers(0, 30)))]
    recs = [mf.Rec(draw(st.integers(0, 2**32 - 1)) * 10**9 + k, p, len(p)) for k, p in enumerate(payloads)]
    return mf.pcap_file(recs, 1, nsec=nsec, big_endian=big_endian), payloads


def whole_read(path):
    got = []
    for batch in open_capture(path):
        for i in range(len(batch)):
            off, cap = int(batch.offset[i]), int(batch.caplen[i])
            got.append((int(batch.ts_ns[i]), int(batch.wirelen[i]), cap, int(batch.linktype[i]), bytes(batch.data[off : off + cap])))
    return got


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(capture=st.one_of(random_pcaps(), random_pcapngs()), unit_size=st.integers(1, 200_000), walk_chunk=st.sampled_from([64, 1000, 1 << 20]))
def test_random_captures_read_alike_whole_and_in_units(capture, unit_size, walk_chunk):
    data, payloads = capture
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "capture"
        path.write_bytes(data)
        saved, units.WALK_CHUNK = units.WALK_CHUNK, walk_chunk
        try:
            pieces = split_capture(path, unit_size=unit_size)
        finally:
            units.WALK_CHUNK = saved
        got, consumed = read_units(pieces, chunk_size=1 << 20)
        want = whole_read(path)
    assert [p[4] for p in want] == payloads
    assert got == want
    assert consumed == len(data)
    assert all(u.start < v.start for u, v in itertools.pairwise(pieces))


def test_units_up_to_the_first_fault_give_what_the_whole_file_gives(tmp_path):
    """A packet block naming an interface never described: the walk cuts on past it, the unit
    holding it raises the whole-file error, and the units before it hold the packets before it."""
    mf = make_fixtures()
    w = mf.Pcapng(False)
    good = [w.epb(0, 1_000_000 + k, mf.Rec(0, bytes(60), 60)) for k in range(6)]
    bad = w.epb(5, 2_000_000, mf.Rec(0, bytes(60), 60))  # interface 5: only interface 0 is described
    path = tmp_path / "bad_interface.pcapng"
    path.write_bytes(w.shb() + w.idb(1, 0) + b"".join(good[:4]) + bad + b"".join(good[4:]))
    head = len(w.shb() + w.idb(1, 0))
    with pytest.raises(CaptureError) as whole:
        for _ in open_capture(path):
            pass
    assert (whole.value.offset, whole.value.packet) == (head + 4 * len(bad), 5)  # by the blocks' lengths
    got = []
    with pytest.raises(CaptureError) as split:
        for unit in split_capture(path, unit_size=1):
            with UnitCapture(unit) as capture:
                got.extend(n for batch in capture for n in range(batch.first_packet, batch.first_packet + len(batch)))
    assert got == [0, 1, 2, 3]
    assert (type(split.value), str(split.value)) == (type(whole.value), str(whole.value))
