"""Classic pcap writing from PacketBatch columns (``live --write-pcap``), vectorized per batch.

Layout per draft-ietf-opsawg-pcap (File Header §4, Packet Record §5), nanosecond magic, so
that live timestamps keep the precision they arrived with.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Self

import numpy as np

from ..errors import CaptureOpenError, OutputError
from . import linktypes
from .batch import MAX_CAPLEN, PacketBatch
from .pcap import PCAP_MAGIC_NSEC, RECORD_HEADER_LEN

_HEADER_COLUMNS = np.arange(RECORD_HEADER_LEN, dtype=np.int64)


class PcapWriter:
    """Append batches to a classic pcap file; the header is written with the first batch.

    Example::

        with PcapWriter("saved.pcap") as w:
            for batch in source:
                w.write(batch)

    Raises CaptureOpenError when the file cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._fh: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise CaptureOpenError(f"cannot create ({exc.strerror or exc})", path=self.path) from None
        self._linktype: int | None = None

    def write(self, batch: PacketBatch) -> None:
        """Write every packet of ``batch`` as one pcap record (one ``write`` call per batch)."""
        n = len(batch)
        if not n:
            return
        if self._linktype is None:
            self._header(int(batch.linktype[0]))
        caplen = batch.caplen
        header = np.empty((n, 4), dtype="<u4")
        header[:, 0] = batch.ts_ns // 1_000_000_000
        header[:, 1] = batch.ts_ns % 1_000_000_000
        header[:, 2] = caplen
        header[:, 3] = batch.wirelen
        size = RECORD_HEADER_LEN + caplen
        start = np.concatenate(([0], np.cumsum(size)[:-1]))
        out = np.empty(int(size.sum()), dtype=np.uint8)
        out[start[:, None] + _HEADER_COLUMNS] = header.view(np.uint8).reshape(n, RECORD_HEADER_LEN)
        # every packet's bytes in one gather: output position -> position in the batch buffer
        body_start = np.concatenate(([0], np.cumsum(caplen)[:-1]))
        k = np.arange(int(caplen.sum()), dtype=np.int64)
        out[k + np.repeat(start + RECORD_HEADER_LEN - body_start, caplen)] = batch.data[k + np.repeat(batch.offset - body_start, caplen)]
        self._put(out.tobytes())

    def _header(self, linktype: int) -> None:
        self._linktype = linktype
        self._put(struct.pack("<IHHiIII", PCAP_MAGIC_NSEC, 2, 4, 0, 0, MAX_CAPLEN, linktype))

    def _put(self, data: bytes) -> None:
        """Write ``data``; raises OutputError when it does not fit (a full disk)."""
        try:
            self._fh.write(data)
        except OSError as exc:
            raise OutputError.from_os(exc, "cannot write the capture", path=self.path) from None

    def close(self) -> None:
        """Flush and close the file; a capture that saw no packet still gets its header."""
        if self._fh.closed:
            return
        try:
            if self._linktype is None:
                self._header(linktypes.LINKTYPE_ETHERNET)
        finally:
            try:
                self._fh.close()
            except OSError as exc:  # the buffered tail did not fit
                raise OutputError.from_os(exc, "cannot write the capture", path=self.path) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
