"""Header decode on hand-made frames (values worked out from the bytes by hand) and on random
bytes (the compiled decoder must never place a payload outside its packet)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapclass.decode import FRAGMENT_PROTO_BASE, Status, decode
from pcapclass.sources import linktypes as lt
from pcapclass.sources.batch import PacketBatch

# Ethernet II, 802.1Q tag (VLAN 5), IPv4 10.0.0.1 -> 10.0.0.2 TCP 40000 -> 25 SYN|ACK, 3 bytes of payload
ETH_VLAN_TCP = bytes.fromhex(
    "0200000000020200000000018100000508004500002b00014000400600000a0000010a000002"
    "9c400019000000000000000050120000000000004f4b0d"
)
# raw IPv6 2001:db8::1 -> 2001:db8::2, a hop-by-hop header, then UDP 5353 -> 2883 with 4 bytes
RAW_V6_UDP = bytes.fromhex(
    "6000000000140001" + "20010db8000000000000000000000001" + "20010db8000000000000000000000002"
    + "1100000000000000" + "14e90b43000c0000" + "4e4f5449"
)
# IPv4 non-first fragment (offset 8 bytes) of a UDP datagram: no ports
V4_FRAGMENT = bytes.fromhex("4500001c00024001401100000a0000010a000002" + "0102030405060708")


def batch(frames: list[tuple[int, bytes]]) -> PacketBatch:
    data = b"".join(f for _, f in frames)
    starts = np.cumsum([0] + [len(f) for _, f in frames[:-1]]).astype(np.int64)
    lengths = np.array([len(f) for _, f in frames], dtype=np.int64)
    return PacketBatch(
        data=np.frombuffer(data, dtype=np.uint8),
        offset=starts,
        caplen=lengths,
        wirelen=lengths,
        ts_ns=np.zeros(len(frames), dtype=np.int64),
        linktype=np.array([t for t, _ in frames], dtype=np.int64),
        first_packet=0,
    )


def test_hand_made_frames():
    pk = decode(batch([(lt.LINKTYPE_ETHERNET, ETH_VLAN_TCP), (lt.LINKTYPE_RAW, RAW_V6_UDP), (lt.LINKTYPE_RAW, V4_FRAGMENT)]))
    assert pk.status.tolist() == [Status.FLOW] * 3
    # frame 1: 14 + 4 (tag) + 20 (IPv4) + 20 (TCP) = 58 bytes of headers, total length 43 - 40 = 3 payload bytes
    assert (pk.proto[0], pk.sport[0], pk.dport[0], pk.tcp_flags[0]) == (6, 40000, 25, 0x12)
    assert (int(pk.src_lo[0]), int(pk.dst_lo[0])) == (0xFFFF_0A00_0001, 0xFFFF_0A00_0002)
    assert (pk.payload_off[0], pk.payload_len[0]) == (58, 3)
    # frame 2 starts at byte 61: 40 (IPv6) + 8 (hop-by-hop) + 8 (UDP) headers, payload length 20 - 16 = 4
    assert (pk.proto[1], pk.sport[1], pk.dport[1]) == (17, 5353, 2883)
    assert (int(pk.src_hi[1]), int(pk.src_lo[1])) == (0x20010DB8_00000000, 1)
    assert (pk.payload_off[1] - 61, pk.payload_len[1]) == (56, 4)
    # frame 3: fragment offset 1 (x 8 bytes) -> keyed as 256 + UDP, no ports
    assert (pk.proto[2], pk.sport[2], pk.dport[2]) == (FRAGMENT_PROTO_BASE + 17, 0, 0)


def test_cut_short_headers_are_truncated_not_misread():
    pk = decode(batch([(lt.LINKTYPE_ETHERNET, ETH_VLAN_TCP[:30]), (lt.LINKTYPE_RAW, RAW_V6_UDP[:39]), (lt.LINKTYPE_ETHERNET, b"")]))
    assert pk.status.tolist() == [Status.TRUNCATED] * 3
    assert pk.payload_len.tolist() == [0, 0, 0]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=600),
    cuts=st.lists(st.tuples(st.integers(0, 599), st.integers(0, 200)), min_size=1, max_size=30),
    link=st.sampled_from(sorted(lt.SUPPORTED) + [147]),
)
def test_random_bytes_never_put_a_payload_outside_its_packet(data, cuts, link):
    size = len(data)
    offset = np.array([min(o, size - 1) for o, _ in cuts], dtype=np.int64)
    caplen = np.array([min(c, size - o) for (_, c), o in zip(cuts, offset)], dtype=np.int64)
    b = PacketBatch(np.frombuffer(data, dtype=np.uint8), offset, caplen, caplen, np.zeros(len(cuts), np.int64),
                    np.full(len(cuts), link, np.int64), 0)  # fmt: skip
    pk = decode(b)
    has = pk.payload_len > 0
    assert (pk.status[has] == Status.FLOW).all()
    assert np.isin(pk.proto[has], (6, 17)).all()
    assert (pk.payload_off[has] >= offset[has]).all()
    assert (pk.payload_off[has] + pk.payload_len[has] <= offset[has] + caplen[has]).all()
    if link not in lt.SUPPORTED:
        assert (pk.status == Status.UNDECODED).all()
