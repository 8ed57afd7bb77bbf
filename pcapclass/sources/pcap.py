"""Classic libpcap files: the global header, then records walked in bounded chunks.

Layout per draft-ietf-opsawg-pcap (File Header §4, Packet Record §5).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from ..errors import InvalidCaptureError
from . import linktypes
from ._records import u32, walk_pcap
from .batch import MAX_CAPLEN, PacketBatch
from .stream import ByteWindow

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
#: Kuznetsov's patched format: 8 more bytes per record header; nothing current writes it
PCAP_MAGIC_MODIFIED = 0xA1B2CD34
FILE_HEADER_LEN = 24
RECORD_HEADER_LEN = 16



def is_pcap(head: bytes) -> bool:
    """True when the first four bytes are a pcap magic in either byte order."""
    if len(head) < 4:
        return False
    return any(
        struct.unpack(order + "I", head[:4])[0] in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC, PCAP_MAGIC_MODIFIED)
        for order in "<>"
    )


def read_pcap(window: ByteWindow, *, max_packets: int | None = None) -> Iterator[PacketBatch]:
    """Yield the records of a pcap stream whose window starts at the file header.

    Raises InvalidCaptureError at the first record that cannot be trusted (after yielding
    every packet before it).
    """
    path = window.path
    while window.end < FILE_HEADER_LEN and window.refill(0):
        pass
    if window.end < FILE_HEADER_LEN:
        raise window.cut(f"truncated pcap file header: {window.end} of {FILE_HEADER_LEN} bytes", offset=0)
    order = "<" if struct.unpack_from("<I", window.buf.data, 0)[0] in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC, PCAP_MAGIC_MODIFIED) else ">"
    magic, _vmaj, _vmin, _zone, _sigfigs, snaplen, network = struct.unpack_from(order + "IHHiIII", window.buf.data, 0)
    if magic == PCAP_MAGIC_MODIFIED:
        raise InvalidCaptureError("modified (Kuznetsov) pcap format is not supported", path=path, offset=0)
    ts_scale = 1000 if magic == PCAP_MAGIC_USEC else 1
    linktype = network & 0xFFFF
    if linktype not in linktypes.SUPPORTED:
        raise InvalidCaptureError(f"unsupported link type {linktype}", path=path, offset=20)
    big_endian = order == ">"
    pos = FILE_HEADER_LEN
    packet_no = 0
    while True:
        data = np.frombuffer(window.buf, dtype=np.uint8)
        offset, caplen, wirelen, ts_ns, pos, bad, bad_fraction = walk_pcap(window.buf, pos, window.end, big_endian, ts_scale, MAX_CAPLEN)
        window.anomalies.ts_fraction_invalid += bad_fraction
        fault = None
        if bad:
            fault = _bad_caplen(path, window.base + pos, packet_no + len(offset) + 1, u32(data, pos + 8, big_endian), MAX_CAPLEN)
        if max_packets is not None and packet_no + len(offset) > max_packets:
            keep = max_packets - packet_no
            offset, caplen, wirelen, ts_ns = offset[:keep], caplen[:keep], wirelen[:keep], ts_ns[:keep]
        if len(offset):
            # A record merely longer than the header's snaplen is read, as libpcap and tshark
            # read it (real writers get snaplen wrong), and counted.
            window.anomalies.count_lengths(caplen, wirelen, snaplen)
            yield PacketBatch(
                data=data,
                offset=offset,
                caplen=caplen,
                wirelen=wirelen,
                ts_ns=ts_ns,
                linktype=np.full(len(offset), linktype, dtype=np.int64),
                first_packet=packet_no,
            )
            packet_no += len(offset)
        if fault is not None:
            raise fault
        if max_packets is not None and packet_no >= max_packets:
            return
        # the record at ``pos`` did not fit in the window: ask for the rest of it
        need = 0
        if pos + RECORD_HEADER_LEN <= window.end:
            need = RECORD_HEADER_LEN + u32(data, pos + 8, big_endian)
        if not window.refill(pos, need):
            remain = window.end
            if remain == 0 and window.fault is None:
                return
            if remain < RECORD_HEADER_LEN:
                msg = f"truncated record header: {remain} of {RECORD_HEADER_LEN} bytes"
            else:
                msg = f"truncated record: header says {need - RECORD_HEADER_LEN} captured bytes, {remain - RECORD_HEADER_LEN} remain"
            raise window.cut(msg, offset=window.base, packet=packet_no + 1)
        pos = 0


def _bad_caplen(path: str, offset: int, packet: int, caplen: int, limit: int) -> InvalidCaptureError:
    return InvalidCaptureError(
        f"record claims {caplen} captured bytes, more than the {limit}-byte maximum: corrupt framing",
        path=path,
        offset=offset,
        packet=packet,
    )
