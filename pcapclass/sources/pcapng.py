"""pcapng files: sections, interfaces and packet blocks walked in bounded chunks.

Layout per draft-ietf-opsawg-pcapng (SHB §4.1, IDB §4.2, EPB §4.3, SPB §4.4, obsolete PB
Appendix A). Blocks of any other type are skipped by their total length. Runs of packet blocks
are walked by the compiled ``walk_pcapng``; section and interface headers, and every fault,
are handled here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import InvalidCaptureError
from ._records import MIN_EPB_LEN, MIN_SPB_LEN, packet_blocks, walk_pcapng
from .batch import MAX_CAPLEN, PacketBatch
from .stream import ByteWindow

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_PB = 0x00000002  # obsolete Packet Block
BT_SPB = 0x00000003
BT_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT = 0
IF_TSRESOL = 9
IF_TSOFFSET = 14
#: a block longer than this is taken as corrupt framing rather than buffered
MAX_BLOCK_LEN = 16 << 20
#: the latest time int64 nanoseconds can hold (2262-04-11); later timestamps saturate here
TS_NS_MAX = np.iinfo(np.int64).max

_EPB_COLUMNS = np.arange(28, dtype=np.int64)
#: each block type's name and the smallest total length its fixed fields allow (§4.1-§4.4, App. A)
_FIXED = {
    BT_SHB: ("section header block", 28),
    BT_IDB: ("interface description block", 20),
    BT_EPB: ("enhanced packet block", MIN_EPB_LEN),
    BT_PB: ("packet block", MIN_EPB_LEN),
    BT_SPB: ("simple packet block", MIN_SPB_LEN),
}
#: the timestamp resolutions whose tick counts convert to int64 nanoseconds (if_tsresol, §4.2)
MAX_EXP10 = 18
MAX_EXP2 = 62


def is_pcapng(head: bytes) -> bool:
    """True when the stream starts with a Section Header Block."""
    return len(head) >= 4 and struct.unpack("<I", head[:4])[0] == BT_SHB


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    #: timestamp units: ticks per second is 10**exp10 (or 2**exp2 when exp2 is set)
    exp10: int = 6
    exp2: int | None = None
    offset_s: int = 0


def read_pcapng(window: ByteWindow, *, max_packets: int | None = None) -> Iterator[PacketBatch]:
    """Yield the packets of a pcapng stream; raise InvalidCaptureError at corrupt framing."""
    path = window.path
    order = "<"
    interfaces: list[_Interface] = []
    pos = 0
    packet_no = 0
    seen_shb = False
    while True:
        buf = window.buf
        end = window.end
        u32 = struct.Struct(order + "I").unpack_from
        epbs: list[npt.NDArray[np.int64]] = []
        spbs: list[npt.NDArray[np.int64]] = []
        pending = 0
        fault: InvalidCaptureError | None = None
        flush = False
        while pos + 12 <= end:
            if seen_shb:
                # runs of packet blocks (and blocks to skip) are walked compiled; the blocks it
                # stops at (section and interface headers, bad lengths) are handled below
                room = max_packets - packet_no - pending if max_packets is not None else end
                e, sp, pos = walk_pcapng(buf, pos, end, order == ">", MAX_BLOCK_LEN, room)
                if e.size:
                    epbs.append(e)
                if sp.size:
                    spbs.append(sp)
                pending += e.size + sp.size
                if pos + 12 > end or (max_packets is not None and packet_no + pending >= max_packets):
                    break
            btype = u32(buf.data, pos)[0]
            if btype == BT_SHB:
                if pending:
                    flush = True  # the interfaces below belong to the old section
                    break
                bom = struct.unpack_from("<I", buf.data, pos + 8)[0]
                if bom == BYTE_ORDER_MAGIC:
                    order = "<"
                elif bom == struct.unpack("<I", struct.pack(">I", BYTE_ORDER_MAGIC))[0]:
                    order = ">"
                else:
                    fault = InvalidCaptureError(f"section header has bad byte-order magic 0x{bom:08x}", path=path, offset=window.base + pos + 8)
                    break
                u32 = struct.Struct(order + "I").unpack_from
                seen_shb = True
                interfaces = []
            elif not seen_shb:
                fault = InvalidCaptureError("pcapng stream does not start with a section header block", path=path, offset=window.base + pos)
                break
            blen = u32(buf.data, pos + 4)[0]
            if blen < 12 or blen % 4:
                fault = InvalidCaptureError(f"block total length {blen} is invalid (must be >= 12 and a multiple of 4)", path=path, offset=window.base + pos, packet=packet_no + pending + 1)
                break
            name, fixed = _FIXED.get(btype, ("block", 12))
            if blen < fixed:
                fault = InvalidCaptureError(f"{name} total length {blen} is below the {fixed} bytes its fields need", path=path, offset=window.base + pos + 4, packet=packet_no + pending + 1)
                break
            if blen > MAX_BLOCK_LEN:
                fault = InvalidCaptureError(f"block total length {blen} exceeds {MAX_BLOCK_LEN}: corrupt framing", path=path, offset=window.base + pos + 4, packet=packet_no + pending + 1)
                break
            if pos + blen > end:
                break
            if btype == BT_IDB:
                iface, problem = _parse_idb(buf.data, pos, blen, order)
                if problem:
                    fault = InvalidCaptureError(f"interface description block: {problem}", path=path, offset=window.base + pos, packet=packet_no + pending + 1)
                    break
                interfaces.append(iface)
            pos += blen
        if pending:
            batch, fault2 = _make_batch(window, _joined(epbs), _joined(spbs), interfaces, order, packet_no)
            if batch is not None and len(batch):
                yield batch
                packet_no += len(batch)
            if fault2 is not None:
                raise fault2
        if fault is not None:
            raise fault
        if max_packets is not None and packet_no >= max_packets:
            return
        if flush:
            continue
        need = 0
        if pos + 8 <= end:
            need = u32(buf.data, pos + 4)[0]
        if not window.refill(pos, need):
            remain = window.end
            if remain == 0 and window.fault is None:
                if not seen_shb:
                    raise InvalidCaptureError("empty pcapng stream", path=path, offset=0)
                return
            raise window.cut(f"truncated block: {remain} bytes remain of a block that needs {need or 'at least 12'}",
                             offset=window.base, packet=packet_no + 1)  # fmt: skip
        pos = 0


def _joined(parts: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _parse_idb(buf: memoryview, pos: int, blen: int, order: str) -> tuple[_Interface, str]:
    """The interface a block describes, and what is wrong with its options ("" when nothing)."""
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
    iface = _Interface(linktype=linktype, snaplen=snaplen)
    opt = pos + 16
    stop = pos + blen - 4
    while opt + 4 <= stop:
        code, length = struct.unpack_from(order + "HH", buf, opt)
        if code == OPT_ENDOFOPT:
            break
        if opt + 4 + length > stop:
            return iface, f"option {code} of {length} bytes runs past the end of its block"
        value = bytes(buf[opt + 4 : opt + 4 + length])
        if code == IF_TSRESOL and length >= 1:
            if value[0] & 0x80:
                iface.exp2 = value[0] & 0x7F
                if iface.exp2 > MAX_EXP2:
                    return iface, f"if_tsresol 2^-{iface.exp2} is finer than pcapclass can convert (2^-{MAX_EXP2})"
            else:
                iface.exp10 = value[0]
                if iface.exp10 > MAX_EXP10:
                    return iface, f"if_tsresol 10^-{iface.exp10} is finer than pcapclass can convert (10^-{MAX_EXP10})"
        elif code == IF_TSOFFSET and length >= 8:
            iface.offset_s = struct.unpack(order + "q", value[:8])[0]
            if abs(iface.offset_s) > TS_NS_MAX // 1_000_000_000 - 1:
                return iface, f"if_tsoffset {iface.offset_s} s lies outside the years int64 nanoseconds can hold"
        opt += 4 + length + (-length % 4)
    return iface, ""


def _ticks_to_ns(ticks: np.ndarray, iface: _Interface) -> tuple[np.ndarray, int]:
    """Interface ticks (unsigned 64-bit, §4.3, held in int64) -> ns since the epoch, and how
    many saturated: values past int64 ns (year 2262) saturate there."""
    u = ticks.astype(np.uint64)  # a tick count with the high bit set is large, not negative
    if iface.exp2 is not None:
        shift = np.uint64(iface.exp2)
        whole = u >> shift
        frac = (u & ((np.uint64(1) << shift) - np.uint64(1))).astype(np.int64)
        frac_ns = (frac * 1_000_000_000) >> iface.exp2 if iface.exp2 <= 30 else 0
        mul = 1_000_000_000
    elif iface.exp10 <= 9:
        whole, frac_ns, mul = u, 0, 10 ** (9 - iface.exp10)
    else:
        whole, frac_ns, mul = u // np.uint64(10 ** (iface.exp10 - 9)), 0, 1
    limit = (TS_NS_MAX - abs(iface.offset_s) * 1_000_000_000 - 1_000_000_000) // mul
    over = whole > np.uint64(limit)
    ns = np.minimum(whole, np.uint64(limit)).astype(np.int64) * mul + frac_ns + iface.offset_s * 1_000_000_000
    return np.where(over, TS_NS_MAX, ns), int(np.count_nonzero(over))


def _make_batch(
    window: ByteWindow,
    epbs: npt.NDArray[np.int64],
    spbs: npt.NDArray[np.int64],
    interfaces: list[_Interface],
    order: str,
    first_packet: int,
) -> tuple[PacketBatch | None, InvalidCaptureError | None]:
    """Gather the packet blocks' fields in one vectorized pass (EPB/PB and SPB, file order)."""
    data = np.frombuffer(window.buf, dtype=np.uint8)
    n_if = len(interfaces)
    if n_if == 0:
        first = int(np.concatenate([epbs, spbs]).min())
        return None, InvalidCaptureError("packet block before any interface description block", path=window.path, offset=window.base + first, packet=first_packet + 1)
    u4 = np.dtype(order + "u4")
    u2 = np.dtype(order + "u2")
    if_link = np.array([i.linktype for i in interfaces], dtype=np.int64)
    if_snap = np.array([i.snaplen for i in interfaces], dtype=np.int64)
    if not len(spbs):
        return _packet_blocks(window, epbs, interfaces, if_link, if_snap, order, first_packet)

    pos_e = epbs
    head = data[pos_e[:, None] + _EPB_COLUMNS]
    words = head.view(u4).astype(np.int64)  # (n, 7): type, len, iface, ts_hi, ts_lo, caplen, origlen
    btype = words[:, 0]
    blen = words[:, 1]
    is_pb = btype == BT_PB
    iface = np.where(is_pb, head[:, 8:10].copy().view(u2).ravel().astype(np.int64), words[:, 2])
    ticks = (words[:, 3] << 32) | words[:, 4]
    caplen_e = words[:, 5]
    wire_e = words[:, 6]
    off_e = pos_e + 28

    pos_s = spbs
    if len(pos_s):
        sw = data[pos_s[:, None] + np.arange(12)].view(u4).astype(np.int64)
        snap0 = if_snap[0] if if_snap[0] else MAX_CAPLEN
        caplen_s = np.minimum(np.minimum(sw[:, 2], sw[:, 1] - 16), snap0)
        positions = np.concatenate([pos_e, pos_s])
        order_idx = np.argsort(positions, kind="stable")
        positions = positions[order_idx]
        blen = np.concatenate([blen, sw[:, 1]])[order_idx]
        iface = np.concatenate([iface, np.zeros(len(pos_s), np.int64)])[order_idx]
        ticks = np.concatenate([ticks, np.zeros(len(pos_s), np.int64)])[order_idx]
        has_ts = np.concatenate([np.ones(len(pos_e), bool), np.zeros(len(pos_s), bool)])[order_idx]
        caplen = np.concatenate([caplen_e, caplen_s])[order_idx]
        wirelen = np.concatenate([wire_e, sw[:, 2]])[order_idx]
        offset = np.concatenate([off_e, pos_s + 12])[order_idx]
        room = np.concatenate([np.full(len(pos_e), 32), np.full(len(pos_s), 16)])[order_idx]
    else:
        positions, caplen, wirelen, offset = pos_e, caplen_e, wire_e, off_e
        room = np.full(len(pos_e), 32)
        has_ts = np.ones(len(pos_e), bool)

    bad_if = (iface < 0) | (iface >= n_if)
    bad_len = (caplen > blen - room) | (caplen > MAX_CAPLEN)
    fault = None
    bad = np.flatnonzero(bad_if | bad_len)
    if bad.size:
        i = int(bad[0])
        fault = _bad_block(window, int(positions[i]), int(iface[i]), n_if, int(caplen[i]), int(blen[i]), first_packet + i + 1)
        positions, iface, ticks, has_ts, caplen, wirelen, offset = (a[:i] for a in (positions, iface, ticks, has_ts, caplen, wirelen, offset))

    snap = if_snap[iface] if len(iface) else np.zeros(0, np.int64)
    window.anomalies.caplen_over_snaplen += int(np.count_nonzero((snap > 0) & (caplen > snap)))
    window.anomalies.count_lengths(caplen, wirelen)
    ts_ns = np.zeros(len(positions), dtype=np.int64)
    for k, spec in enumerate(interfaces):
        sel = (iface == k) & has_ts
        if sel.any():
            ts_ns[sel], saturated = _ticks_to_ns(ticks[sel], spec)
            window.anomalies.ts_out_of_range += saturated
    # Simple Packet Blocks carry no timestamp: they take the previous packet's time.
    no_ts = ~has_ts
    if no_ts.any():
        idx = np.where(~no_ts, np.arange(len(ts_ns)), 0)
        np.maximum.accumulate(idx, out=idx)
        ts_ns = ts_ns[idx]
    batch = PacketBatch(
        data=data,
        offset=offset,
        caplen=caplen,
        wirelen=wirelen,
        ts_ns=ts_ns,
        linktype=if_link[iface] if len(iface) else np.zeros(0, np.int64),
        first_packet=first_packet,
    )
    return batch, fault


def _packet_blocks(window: ByteWindow, epbs: npt.NDArray[np.int64], interfaces: list[_Interface], if_link: npt.NDArray[np.int64],
                   if_snap: npt.NDArray[np.int64], order: str, first_packet: int) -> tuple[PacketBatch, InvalidCaptureError | None]:  # fmt: skip
    """``_make_batch`` for a run of Enhanced (or obsolete) Packet Blocks only, the usual case:
    the fields, checks, snaplen count and times of every block in one compiled pass."""
    offset, caplen, wirelen, ts_ns, linktype, over, saturated, bad = packet_blocks(
        window.buf, epbs, order == ">", if_link, if_snap, np.array([-1 if i.exp2 is None else i.exp2 for i in interfaces], dtype=np.int64),
        np.array([i.exp10 for i in interfaces], dtype=np.int64), np.array([i.offset_s for i in interfaces], dtype=np.int64),
        MAX_CAPLEN, TS_NS_MAX,
    )  # fmt: skip
    window.anomalies.caplen_over_snaplen += over
    window.anomalies.ts_out_of_range += saturated
    window.anomalies.count_lengths(caplen, wirelen)
    fault = None
    if bad is not None:
        i, iface, cap, blen = bad
        fault = _bad_block(window, int(epbs[i]), iface, len(interfaces), cap, blen, first_packet + i + 1)
    data = np.frombuffer(window.buf, dtype=np.uint8)
    return PacketBatch(data=data, offset=offset, caplen=caplen, wirelen=wirelen, ts_ns=ts_ns, linktype=linktype, first_packet=first_packet), fault


def _bad_block(window: ByteWindow, position: int, iface: int, n_if: int, caplen: int, blen: int, packet: int) -> InvalidCaptureError:
    """The fault of a packet block that names an undescribed interface or claims more than it holds."""
    if iface >= n_if:
        msg = f"packet block names interface {iface}, but only {n_if} are described"
    else:
        msg = f"packet block claims {caplen} captured bytes in a {blen}-byte block: corrupt framing"
    return InvalidCaptureError(msg, path=window.path, offset=window.base + position, packet=packet)
