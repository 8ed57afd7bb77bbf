"""Decoded packet columns: what decode makes of a batch, the one shape later stages read.

The header layouts themselves (Ethernet/802.1Q/QinQ, Linux cooked v1/v2, BSD loopback, IPv4,
IPv6 with extension headers, TCP, UDP) are walked in ``_decode.pyx``, one compiled pass per
batch; this module names what comes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from . import _decode
from .sources.batch import PacketBatch

#: key protocol of IPv4/IPv6 non-first fragments: 256 + the fragmented protocol
FRAGMENT_PROTO_BASE: int = _decode.FRAGMENT_PROTO_BASE
#: IP protocol numbers of the transports flows have ports for (IANA "Assigned Internet Protocol Numbers")
IPPROTO_TCP: int = _decode.TCP
IPPROTO_UDP: int = _decode.UDP


class Status(IntEnum):
    """What decode made of a packet; everything but FLOW is counted, not flowed."""

    FLOW = _decode.FLOW  # an IP packet with addresses (and ports for TCP/UDP)
    NON_IP = _decode.NON_IP  # ARP, STP, LLC...: a link layer that carries no IP
    TRUNCATED = _decode.TRUNCATED  # the capture cut an IP, TCP or UDP header short
    UNDECODED = _decode.UNDECODED  # a link type pcapclass does not decode


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
    #: (0 for all but TCP/UDP packets of a flow whose transport header is whole)
    payload_off: npt.NDArray[np.int64]
    payload_len: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


def decode(batch: PacketBatch) -> Packets:
    """Decode every packet of ``batch`` down to the transport header."""
    status, proto, src_hi, src_lo, dst_hi, dst_lo, sport, dport, tcp_flags, payload_off, payload_len = (
        _decode.decode_headers(batch.data, batch.offset, batch.caplen, batch.linktype)
    )
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


def totals(pk: Packets) -> tuple[int, int, int, list[int], int]:
    """``(bytes, first_ns, last_ns, per_status, fragments)`` of a batch of at least one packet:
    its original bytes, earliest and latest times, packets per ``Status`` and IP fragments
    after the first, in one compiled pass."""
    return _decode.batch_totals(pk.wirelen, pk.ts_ns, pk.status, pk.proto)
