"""Classic libpcap files: the global header, then records walked in bounded chunks.

Layout per draft-ietf-opsawg-pcap (File Header §4, Packet Record §5).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from .. import linktypes
from ..errors import InvalidCaptureError
from .batch import PacketBatch, rows_at
from .stream import ByteWindow

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
#: Kuznetsov's patched format: 8 more bytes per record header; nothing current writes it
PCAP_MAGIC_MODIFIED = 0xA1B2CD34
FILE_HEADER_LEN = 24
RECORD_HEADER_LEN = 16
#: libpcap's MAXIMUM_SNAPLEN: no record may claim more captured bytes than this
MAX_CAPLEN = 262144



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
        raise InvalidCaptureError(
            f"truncated pcap file header: {window.end} of {FILE_HEADER_LEN} bytes", path=path, offset=0
        )
    order = "<" if struct.unpack_from("<I", window.buf, 0)[0] in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC, PCAP_MAGIC_MODIFIED) else ">"
    magic, _vmaj, _vmin, _zone, _sigfigs, snaplen, network = struct.unpack_from(order + "IHHiIII", window.buf, 0)
    if magic == PCAP_MAGIC_MODIFIED:
        raise InvalidCaptureError("modified (Kuznetsov) pcap format is not supported", path=path, offset=0)
    ts_scale = 1000 if magic == PCAP_MAGIC_USEC else 1
    linktype = network & 0xFFFF
    if linktype not in linktypes.SUPPORTED:
        raise InvalidCaptureError(f"unsupported link type {linktype}", path=path, offset=20)
    unpack_caplen = struct.Struct(order + "I").unpack_from
    dtype = np.dtype(order + "u4")
    pos = FILE_HEADER_LEN
    packet_no = 0
    while True:
        buf = window.buf
        end = window.end
        offsets: list[int] = []
        append = offsets.append
        last = end - RECORD_HEADER_LEN
        while pos <= last:
            append(pos)
            pos += RECORD_HEADER_LEN + unpack_caplen(buf, pos + 8)[0]
        if pos > end:  # the last record runs past the window: read it with the next one
            pos = offsets.pop()
        fault: InvalidCaptureError | None = None
        if offsets:
            offs = np.array(offsets, dtype=np.int64)
            data = np.frombuffer(buf, dtype=np.uint8)
            fields = rows_at(data[: offs[-1] + RECORD_HEADER_LEN], offs, RECORD_HEADER_LEN).view(dtype).astype(np.int64)
            caplen = fields[:, 2]
            # A record longer than libpcap's 256 KiB ceiling means the framing is corrupt: trusting it
            # would misread every record after it. A record merely longer than the header's snaplen is
            # read, as libpcap and tshark read it (real writers get snaplen wrong), and counted.
            bad = np.flatnonzero(caplen > MAX_CAPLEN)
            if bad.size:
                i = int(bad[0])
                fault = _bad_caplen(path, window.base + offsets[i], packet_no + i + 1, int(caplen[i]), MAX_CAPLEN)
                offs, fields, caplen = offs[:i], fields[:i], caplen[:i]
            if max_packets is not None and packet_no + len(offs) > max_packets:
                keep = max_packets - packet_no
                offs, fields, caplen = offs[:keep], fields[:keep], caplen[:keep]
            if snaplen:
                window.caplen_over_snaplen += int(np.count_nonzero(caplen > snaplen))
            if len(offs):
                yield PacketBatch(
                    data=data,
                    offset=offs + RECORD_HEADER_LEN,
                    caplen=caplen,
                    wirelen=fields[:, 3],
                    ts_ns=fields[:, 0] * 1_000_000_000 + fields[:, 1] * ts_scale,
                    linktype=np.full(len(offs), linktype, dtype=np.int64),
                    first_packet=packet_no,
                )
                packet_no += len(offs)
            if fault is not None:
                raise fault
            if max_packets is not None and packet_no >= max_packets:
                return
        # the record at ``pos`` did not fit: check its header before asking for more bytes
        need = 0
        if pos <= last:
            caplen_here = unpack_caplen(buf, pos + 8)[0]
            if caplen_here > MAX_CAPLEN:
                raise _bad_caplen(path, window.base + pos, packet_no + 1, caplen_here, MAX_CAPLEN)
            need = RECORD_HEADER_LEN + caplen_here
        if not window.refill(pos, need):
            remain = window.end
            if remain == 0:
                return
            offset = window.base
            if remain < RECORD_HEADER_LEN:
                msg = f"truncated record header: {remain} of {RECORD_HEADER_LEN} bytes"
            else:
                caplen_here = unpack_caplen(window.buf, 8)[0]
                msg = f"truncated record: header says {caplen_here} captured bytes, {remain - RECORD_HEADER_LEN} remain"
            raise InvalidCaptureError(msg, path=path, offset=offset, packet=packet_no + 1)
        pos = 0


def _bad_caplen(path: str, offset: int, packet: int, caplen: int, limit: int) -> InvalidCaptureError:
    return InvalidCaptureError(
        f"record claims {caplen} captured bytes, more than the {limit}-byte maximum: corrupt framing",
        path=path,
        offset=offset,
        packet=packet,
    )
