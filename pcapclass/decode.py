"""L2/L3/L4 header layouts decoded over whole batches with numpy: no per-packet Python.

Layouts: IEEE 802.3/802.1Q/802.1ad, Linux cooked v1/v2 (tcpdump.org LINKTYPE_LINUX_SLL/SLL2),
BSD loopback, IPv4 (RFC 791), IPv6 and its extension headers (RFC 8200), TCP (RFC 9293),
UDP (RFC 768).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from . import linktypes as lt
from .sources.batch import PacketBatch

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100  # IEEE 802.1Q
ETHERTYPE_QINQ = 0x88A8  # IEEE 802.1ad
ETHERTYPE_QINQ_OLD = 0x9100
#: VLAN tags unwrapped at most (QinQ plus one more)
MAX_VLAN_TAGS = 3

ETH_HDR_LEN = 14
SLL_HDR_LEN = 16
SLL2_HDR_LEN = 20
NULL_HDR_LEN = 4
#: BSD AF_INET and the three AF_INET6 values of the BSDs (libpcap's pcap/dlt.h notes)
AF_INET = 2
AF_INET6 = (24, 28, 30)

IPPROTO_HOPOPTS = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
IPPROTO_DSTOPTS = 60
#: IPv6 extension headers walked to reach the transport header
MAX_IPV6_EXT_HEADERS = 8
#: key protocol of IPv4/IPv6 non-first fragments: 256 + the fragmented protocol
FRAGMENT_PROTO_BASE = 256

IPV4_MAPPED_PREFIX = np.uint64(0xFFFF_0000_0000)


class Status(IntEnum):
    """What decode made of a packet; everything but FLOW is counted, not flowed."""

    FLOW = 0  # an IP packet with addresses (and ports for TCP/UDP)
    NON_IP = 1  # ARP, STP, LLC...: a link layer that carries no IP
    TRUNCATED = 2  # the capture cut an IP, TCP or UDP header short
    UNDECODED = 3  # a link type pcapclass does not decode


@dataclass(frozen=True, slots=True)
class Packets:
    """Decoded columns of one batch, aligned with the batch's packets.

    Addresses are 128-bit values split in two uint64 halves; IPv4 addresses are stored
    IPv4-mapped (``::ffff:a.b.c.d``) so that one key serves both families.
    """

    ts_ns: npt.NDArray[np.int64]
    wirelen: npt.NDArray[np.int64]
    status: npt.NDArray[np.uint8]
    #: 6 TCP, 17 UDP, another IP protocol, or 256 + protocol for a non-first fragment
    proto: npt.NDArray[np.int64]
    src_hi: npt.NDArray[np.uint64]
    src_lo: npt.NDArray[np.uint64]
    dst_hi: npt.NDArray[np.uint64]
    dst_lo: npt.NDArray[np.uint64]
    sport: npt.NDArray[np.int64]
    dport: npt.NDArray[np.int64]
    tcp_flags: npt.NDArray[np.int64]
    #: where each packet's transport payload starts in the batch's ``data``, and its length
    payload_off: npt.NDArray[np.int64]
    payload_len: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


def decode(batch: PacketBatch) -> Packets:
    """Decode every packet of ``batch`` down to the transport header."""
    n = len(batch)
    data = batch.data
    start = batch.offset
    end = start + batch.caplen

    def u8(idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.take(data, idx, mode="clip").astype(np.int64)

    def be16(idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return (u8(idx) << 8) | u8(idx + 1)

    # ---- link layer: where L3 starts and which ethertype it has
    etype = np.zeros(n, dtype=np.int64)
    l3 = start.copy()
    known = np.zeros(n, dtype=bool)
    for linktype in _present(batch.linktype):
        sel = slice(None) if linktype is None else np.flatnonzero(batch.linktype == linktype)
        code = int(batch.linktype[0]) if linktype is None else linktype
        s = start[sel]
        if code == lt.LINKTYPE_ETHERNET:
            etype[sel] = be16(s + 12)
            l3[sel] = s + ETH_HDR_LEN
        elif code == lt.LINKTYPE_LINUX_SLL:
            etype[sel] = be16(s + 14)
            l3[sel] = s + SLL_HDR_LEN
        elif code == lt.LINKTYPE_LINUX_SLL2:
            etype[sel] = be16(s)
            l3[sel] = s + SLL2_HDR_LEN
        elif code in (lt.LINKTYPE_RAW, lt.LINKTYPE_IPV4, lt.LINKTYPE_IPV6, *lt.DLT_RAW_BSD):
            etype[sel] = _etype_from_version(u8(s))
        elif code in (lt.LINKTYPE_NULL, lt.LINKTYPE_LOOP):
            # the family is a 4-byte integer in host (NULL) or network (LOOP) order; its
            # value is < 256, so whichever end byte is non-zero holds it
            family = u8(s) | u8(s + 3)
            etype[sel] = np.where(
                family == AF_INET, ETHERTYPE_IPV4, np.where(np.isin(family, AF_INET6), ETHERTYPE_IPV6, 0)
            )
            l3[sel] = s + NULL_HDR_LEN
        else:
            continue
        known[sel] = True
    for _ in range(MAX_VLAN_TAGS):
        tagged = np.flatnonzero((etype == ETHERTYPE_VLAN) | (etype == ETHERTYPE_QINQ) | (etype == ETHERTYPE_QINQ_OLD))
        if not tagged.size:
            break
        etype[tagged] = be16(l3[tagged] + 2)
        l3[tagged] += 4

    status = np.where(known, Status.NON_IP, Status.UNDECODED).astype(np.uint8)
    proto = np.zeros(n, dtype=np.int64)
    src_hi = np.zeros(n, dtype=np.uint64)
    src_lo = np.zeros(n, dtype=np.uint64)
    dst_hi = np.zeros(n, dtype=np.uint64)
    dst_lo = np.zeros(n, dtype=np.uint64)
    l4 = np.zeros(n, dtype=np.int64)
    ip_end = end.copy()
    first_frag = np.ones(n, dtype=bool)

    # ---- IPv4
    v4 = np.flatnonzero(known & (etype == ETHERTYPE_IPV4))
    if v4.size:
        a = l3[v4]
        b0 = u8(a)
        ihl = (b0 & 0x0F) * 4
        ok = ((b0 >> 4) == 4) & (ihl >= 20) & (a + ihl <= end[v4])
        status[v4] = np.where(ok, Status.FLOW, Status.TRUNCATED)
        proto[v4] = u8(a + 9)
        first_frag[v4] = (be16(a + 6) & 0x1FFF) == 0
        src_lo[v4] = IPV4_MAPPED_PREFIX | _be32(data, a + 12)
        dst_lo[v4] = IPV4_MAPPED_PREFIX | _be32(data, a + 16)
        l4[v4] = a + ihl
        ip_end[v4] = np.minimum(end[v4], a + be16(a + 2))

    # ---- IPv6 and its extension headers
    v6 = np.flatnonzero(known & (etype == ETHERTYPE_IPV6))
    if v6.size:
        a = l3[v6]
        ok = ((u8(a) >> 4) == 6) & (a + 40 <= end[v6])
        status[v6] = np.where(ok, Status.FLOW, Status.TRUNCATED)
        src_hi[v6] = _be64(data, a + 8)
        src_lo[v6] = _be64(data, a + 16)
        dst_hi[v6] = _be64(data, a + 24)
        dst_lo[v6] = _be64(data, a + 32)
        plen = be16(a + 4)
        ip_end[v6] = np.where(plen > 0, np.minimum(end[v6], a + 40 + plen), end[v6])
        nh = u8(a + 6)
        pos = a + 40
        frag_first = np.ones(v6.size, dtype=bool)
        for _ in range(MAX_IPV6_EXT_HEADERS):
            ext = np.flatnonzero(
                np.isin(nh, (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH, IPPROTO_DSTOPTS))
            )
            if not ext.size:
                break
            p = pos[ext]
            kind = nh[ext]
            hlen = np.where(
                kind == IPPROTO_FRAGMENT, 8, np.where(kind == IPPROTO_AH, (u8(p + 1) + 2) * 4, (u8(p + 1) + 1) * 8)
            )
            frag = kind == IPPROTO_FRAGMENT
            frag_first[ext[frag]] &= (be16(p[frag] + 2) >> 3) == 0
            nh[ext] = u8(p)
            pos[ext] = p + hlen
        proto[v6] = nh
        first_frag[v6] = frag_first
        l4[v6] = pos

    # ---- transport: ports for TCP/UDP first fragments; non-first fragments get their own key
    is_flow = status == Status.FLOW
    nonfirst = is_flow & ~first_frag
    proto[nonfirst] += FRAGMENT_PROTO_BASE
    ported = np.flatnonzero(is_flow & ((proto == IPPROTO_TCP) | (proto == IPPROTO_UDP)))
    sport = np.zeros(n, dtype=np.int64)
    dport = np.zeros(n, dtype=np.int64)
    tcp_flags = np.zeros(n, dtype=np.int64)
    payload_off = np.zeros(n, dtype=np.int64)
    payload_len = np.zeros(n, dtype=np.int64)
    if ported.size:
        p = l4[ported]
        tcp = proto[ported] == IPPROTO_TCP
        hdr = np.where(tcp, (u8(p + 12) >> 4) * 4, 8)
        complete = p + np.where(tcp, 14, 4) <= end[ported]
        status[ported[~complete]] = Status.TRUNCATED
        sport[ported] = be16(p)
        dport[ported] = be16(p + 2)
        tcp_flags[ported] = np.where(tcp, u8(p + 13), 0)
        body = p + hdr
        payload_off[ported] = body
        payload_len[ported] = np.maximum(ip_end[ported] - body, 0)

    return Packets(
        ts_ns=batch.ts_ns,
        wirelen=batch.wirelen,
        status=status,
        proto=proto,
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        sport=sport,
        dport=dport,
        tcp_flags=tcp_flags,
        payload_off=payload_off,
        payload_len=payload_len,
    )


def _present(linktype: npt.NDArray[np.int64]) -> list[int | None]:
    """The link types in a batch; ``[None]`` for the usual single-type batch (no masks)."""
    if not linktype.size or (linktype == linktype[0]).all():
        return [None]
    return [int(v) for v in np.unique(linktype)]


def _etype_from_version(first_byte: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    version = first_byte >> 4
    return np.where(version == 4, ETHERTYPE_IPV4, np.where(version == 6, ETHERTYPE_IPV6, 0))


def _be32(data: npt.NDArray[np.uint8], idx: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    raw = np.take(data, idx[:, None] + np.arange(4), mode="clip")
    return raw.view(">u4").ravel().astype(np.uint64)


def _be64(data: npt.NDArray[np.uint8], idx: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    raw = np.take(data, idx[:, None] + np.arange(8), mode="clip")
    return raw.view(">u8").ravel().astype(np.uint64)
