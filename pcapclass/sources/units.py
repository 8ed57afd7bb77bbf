"""Work units: a capture file cut into byte ranges at record boundaries, each read alone by the
capture readers.

``split_capture`` walks the file once (record headers for pcap, block headers for pcapng; the
packet bytes are not looked at) and cuts it at the first record or packet block starting at or
after each multiple of ``unit_size``. A unit after the first is presented to the readers as the
file's header blocks in force at its start -- the pcap file header, or the pcapng section header
and interface descriptions of its section -- followed by its byte range, so that the unchanged
readers give, unit after unit, exactly the packets of the whole file. A pcapng cut never falls
before a Simple Packet Block, which takes its time from the packet before it.

A file no larger than ``unit_size`` is one unit, not walked. Not split either (one unit, read as
``open_capture`` reads it): gzip, stdin, and what is not a pcap or pcapng (whose error then comes
from reading it). Where the walk meets corrupt framing it stops cutting: the last unit runs to
the end of the file, and reading it raises the error a whole-file read raises. Faults the walk
does not look for (a packet block naming an undescribed interface, a read error) are raised by
the unit that meets them; as a whole-file read stops there, the units after the first that
raises must be dropped.

``UnitCapture`` reads a unit: batches and errors are numbered in the whole file (packet numbers,
byte offsets), so messages name the file's packets whichever unit met them.

Example::

    for unit in split_capture("big.pcapng", unit_size=64 << 20):
        with UnitCapture(unit) as capture:
            for batch in capture:
                ...
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO, Self

import numpy as np
import numpy.typing as npt

from ..errors import CaptureError
from . import DEFAULT_CHUNK_SIZE, CaptureFile, PacketBatch, ReadAnomalies, linktypes
from ._records import walk_pcap, walk_pcapng
from .batch import MAX_CAPLEN
from .pcap import (
    FILE_HEADER_LEN,
    PCAP_MAGIC_NSEC,
    PCAP_MAGIC_USEC,
    RECORD_HEADER_LEN,
    is_pcap,
)
from .pcapng import BT_IDB, BT_SHB, BYTE_ORDER_MAGIC, MAX_BLOCK_LEN, is_pcapng
from .stream import ByteWindow, open_stream

__all__ = ["DEFAULT_UNIT_SIZE", "UnitCapture", "WorkUnit", "split_capture"]

DEFAULT_UNIT_SIZE = 64 << 20
#: bytes of the file held at a time while walking it
WALK_CHUNK = DEFAULT_CHUNK_SIZE
#: a pcapng block's type and total length (draft-ietf-opsawg-pcapng §3.1), and its smallest size
BLOCK_HEAD_LEN = 8
MIN_BLOCK_LEN = 12

#: the classic pcap formats split (the modified format's longer record headers are refused whole)
_MAGICS = (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC)

#: a section's byte order by how its byte-order magic reads little-endian (§4.1)
_ORDERS = {BYTE_ORDER_MAGIC: "<", int.from_bytes(BYTE_ORDER_MAGIC.to_bytes(4, "big"), "little"): ">"}

#: (file offset, length) of a piece of the file
Piece = tuple[int, int]


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """A byte range of a capture file that the readers can read alone."""

    path: str
    #: the unit's place among its file's units, from 0
    index: int
    #: file offsets of the range; ``end`` is None for a unit read whole (to the end of its stream)
    start: int
    end: int | None
    #: 0-based number, in the whole file, of the unit's first packet
    first_packet: int
    #: the header blocks presented before the range, as pieces of the file
    head: tuple[Piece, ...] = ()

    @property
    def whole(self) -> bool:
        """Read as ``open_capture`` reads the file: gzip, stdin, or not a capture."""
        return self.end is None

    def file_offset(self, offset: int) -> int:
        """The file offset of byte ``offset`` of the unit's stream (head pieces, then range)."""
        for at, length in self.head:
            if offset < length:
                return at + offset
            offset -= length
        return self.start + offset


def split_capture(path: str | os.PathLike[str], *, unit_size: int = DEFAULT_UNIT_SIZE) -> list[WorkUnit]:
    """The work units of a capture file, in file order.

    Raises CaptureOpenError when the file cannot be opened; any other fault is left to reading.
    """
    name = os.fspath(path)
    if name == "-":
        return [WorkUnit(name, 0, 0, None, 0)]
    stream, name, total, position = open_stream(name)
    with stream:
        if position is not None:  # gzip
            return [WorkUnit(name, 0, 0, None, 0)]
        if total is not None and total <= unit_size:
            return [WorkUnit(name, 0, 0, total, 0)]  # nothing to cut: not walked
        window = ByteWindow(stream, path=name, chunk_size=WALK_CHUNK)
        window.refill(0, FILE_HEADER_LEN)
        head = bytes(window.buf[: min(4, window.end)])
        if is_pcap(head) and _splittable_pcap(window):
            cuts = _pcap_cuts(window, unit_size)
        elif is_pcapng(head):
            cuts = _pcapng_cuts(window, unit_size)
        else:
            return [WorkUnit(name, 0, 0, None, 0)]
    size = total if total is not None else window.base + window.end
    bounds = [start for start, _, _ in cuts[1:]] + [size]
    return [WorkUnit(name, k, start, end, first, pieces) for k, ((start, first, pieces), end) in enumerate(zip(cuts, bounds))]


#: where a unit starts, the number of its first packet, its head pieces
_Cut = tuple[int, int, tuple[Piece, ...]]


class _Cutter:
    """Picks the cuts: the first candidate at or after each multiple of ``unit_size``, never
    before the file's first packet."""

    def __init__(self, unit_size: int) -> None:
        self.unit_size = unit_size
        self.cuts: list[_Cut] = [(0, 0, ())]
        self._next = unit_size

    def offer(self, starts: npt.NDArray[np.int64], numbers: npt.NDArray[np.int64], head: tuple[Piece, ...]) -> None:
        """Candidates: file offsets (ascending) and the packet number each starts."""
        while (i := int(np.searchsorted(starts, self._next))) < len(starts):
            at, number = int(starts[i]), int(numbers[i])
            if number > 0:
                self.cuts.append((at, number, head))
            self._next = (at // self.unit_size + 1) * self.unit_size


def _splittable_pcap(window: ByteWindow) -> bool:
    """A whole file header of a format and link type the pcap reader reads (else the reader's
    error comes from reading the file whole)."""
    if window.end < FILE_HEADER_LEN:
        return False
    order = "<" if struct.unpack_from("<I", window.buf.data, 0)[0] in _MAGICS else ">"
    magic, *_, network = struct.unpack_from(order + "IHHiIII", window.buf.data, 0)
    return magic in _MAGICS and network & 0xFFFF in linktypes.SUPPORTED


def _pcap_cuts(window: ByteWindow, unit_size: int) -> list[_Cut]:
    big_endian = struct.unpack_from("<I", window.buf.data, 0)[0] not in _MAGICS
    cutter = _Cutter(unit_size)
    pos, packets = FILE_HEADER_LEN, 0
    while True:
        offset, *_, stop, bad, _fraction = walk_pcap(window.buf, pos, window.end, big_endian, 1, MAX_CAPLEN)
        cutter.offer(window.base + offset - RECORD_HEADER_LEN, packets + np.arange(len(offset)), ((0, FILE_HEADER_LEN),))
        packets += len(offset)
        if bad:
            return cutter.cuts
        need = 0
        if stop + RECORD_HEADER_LEN <= window.end:
            need = RECORD_HEADER_LEN + struct.unpack_from(">I" if big_endian else "<I", window.buf.data, stop + 8)[0]
        if not window.refill(stop, need):
            return cutter.cuts
        pos = 0


def _pcapng_cuts(window: ByteWindow, unit_size: int) -> list[_Cut]:
    cutter = _Cutter(unit_size)
    order = "<"
    shb: Piece = (0, 0)
    idbs: list[Piece] = []
    pos, packets = 0, 0
    while True:
        buf, end, base = window.buf.data, window.end, window.base
        while pos + MIN_BLOCK_LEN <= end:
            btype = struct.unpack_from(order + "I", buf, pos)[0]
            if btype == BT_SHB:
                order = _ORDERS.get(struct.unpack_from("<I", buf, pos + 8)[0], "")
                if not order:
                    return cutter.cuts  # a bad byte-order magic: reading the last unit reports it
            blen = struct.unpack_from(order + "I", buf, pos + 4)[0]
            if blen < MIN_BLOCK_LEN or blen % 4 or blen > MAX_BLOCK_LEN:
                return cutter.cuts  # corrupt framing: reading the last unit reports it
            if pos + blen > end:
                break
            if btype == BT_SHB:
                shb, idbs = (base + pos, blen), []
            elif btype == BT_IDB:
                idbs.append((base + pos, blen))
            else:
                epb, spb, stop = walk_pcapng(window.buf, pos, end, order == ">", MAX_BLOCK_LEN, end)
                if stop == pos:
                    return cutter.cuts  # a packet block too short for its type: corrupt
                every = np.sort(np.concatenate([epb, spb]))
                cutter.offer(base + epb, packets + np.searchsorted(every, epb), (shb, *idbs))
                packets += len(every)
                pos = stop
                continue
            pos += blen
        need = struct.unpack_from(order + "I", buf, pos + 4)[0] if pos + BLOCK_HEAD_LEN <= end else 0
        if not window.refill(pos, need):
            return cutter.cuts
        pos = 0


class _UnitStream(io.RawIOBase):
    """A unit's head pieces, then its byte range, as one stream."""

    def __init__(self, unit: WorkUnit) -> None:
        super().__init__()
        assert unit.end is not None
        self._file, *_ = open_stream(unit.path)
        pieces = []
        for at, length in unit.head:
            self._file.seek(at)
            pieces.append(self._file.read(length))
        self._head = b"".join(pieces)
        self._file.seek(unit.start)
        self._left = unit.end - unit.start

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n], self._head = self._head[:n], self._head[n:]
            return n
        n = self._file.readinto(view[: min(len(view), self._left)]) or 0  # type: ignore[attr-defined]
        self._left -= n
        return int(n)

    def close(self) -> None:
        self._file.close()
        super().close()


class UnitCapture:
    """A work unit opened for reading: iterate it for PacketBatch numbered in the whole file.

    Raises what ``open_capture`` raises, with the byte offset and packet number in the file.
    """

    def __init__(self, unit: WorkUnit, *, chunk_size: int = DEFAULT_CHUNK_SIZE, keep_chunks: int = 1) -> None:
        self.unit = unit
        self._head_len = sum(length for _, length in unit.head)
        try:
            stream: BinaryIO | None = None if unit.whole else _UnitStream(unit)  # type: ignore[assignment]
            self._capture = CaptureFile(unit.path, chunk_size=chunk_size, keep_chunks=keep_chunks, stream=stream, name=unit.path)
        except CaptureError as exc:
            raise self._in_file(exc) from None

    @property
    def consumed(self) -> int:
        """Bytes of the unit's range read so far (compressed bytes for gzip)."""
        return max(0, self._capture.consumed - self._head_len)

    @property
    def anomalies(self) -> ReadAnomalies:
        """The unit's share of the file's read anomalies (complete once the unit is read)."""
        return self._capture.anomalies

    def __iter__(self) -> Iterator[PacketBatch]:
        try:
            for batch in self._capture:
                yield replace(batch, first_packet=batch.first_packet + self.unit.first_packet)
        except CaptureError as exc:
            raise self._in_file(exc) from None

    def _in_file(self, exc: CaptureError) -> CaptureError:
        if not self.unit.whole:
            exc.offset = None if exc.offset is None else self.unit.file_offset(exc.offset)
            exc.packet = None if exc.packet is None else exc.packet + self.unit.first_packet
            exc.args = (str(exc),)
        return exc

    def close(self) -> None:
        self._capture.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
