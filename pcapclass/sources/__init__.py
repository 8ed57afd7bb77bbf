"""Packet sources: capture files (pcap, pcapng, gzip, stdin) yielding PacketBatch columns."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO, Self

from ..errors import InvalidCaptureError
from .batch import PacketBatch, ReadAnomalies
from .pcap import is_pcap, read_pcap
from .pcapng import is_pcapng, read_pcapng
from .stream import ByteWindow, GzipStream, open_stream

__all__ = ["DEFAULT_CHUNK_SIZE", "CaptureFile", "PacketBatch", "ReadAnomalies", "open_capture"]

#: bytes read per chunk: large enough that per-batch overhead vanishes, small enough for cache
DEFAULT_CHUNK_SIZE = 4 << 20


class CaptureFile:
    """An opened capture: iterate it for PacketBatch; ``consumed``/``total`` drive progress.

    A batch's bytes are valid until the next chunk is read; with ``keep_chunks``, until that
    many more are (what decoding ahead in a second thread needs).

    Example::

        with open_capture("trace.pcap") as cap:
            for batch in cap:
                print(len(batch))
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        low_latency: bool = False,
        stream: BinaryIO | None = None,
        name: str | None = None,
        keep_chunks: int = 1,
    ) -> None:
        if stream is None:
            stream, self.path, self.total, position = open_stream(path)
        else:
            self.path, self.total, position = name or os.fspath(path), None, None
        self._stream = stream
        self._window = ByteWindow(stream, path=self.path, chunk_size=chunk_size, low_latency=low_latency, position=position,
                                  keep_chunks=keep_chunks)  # fmt: skip
        self._window.refill(0, 24)
        head = bytes(self._window.buf[: min(4, self._window.end)])
        if self._window.end == 0:
            self.close()
            raise self._window.cut("empty file: no capture header", offset=0)
        if is_pcapng(head):
            self.format = "pcapng"
        elif is_pcap(head):
            self.format = "pcap"
        else:
            self.close()
            raise InvalidCaptureError(
                f"not a pcap or pcapng capture (starts with {head!r})", path=self.path, offset=0
            )

    @property
    def consumed(self) -> int:
        """Input bytes read so far (compressed bytes for gzip input)."""
        return self._window.consumed

    @property
    def anomalies(self) -> ReadAnomalies:
        """What was read although off, counted (complete once the capture is read to its end)."""
        if isinstance(self._stream, GzipStream):
            self._window.anomalies.gzip_trailing_bytes = self._stream.trailing_bytes
        return self._window.anomalies

    def __iter__(self) -> Iterator[PacketBatch]:
        reader = read_pcapng if self.format == "pcapng" else read_pcap
        try:
            yield from reader(self._window)
        finally:
            self.close()

    def close(self) -> None:
        """Close the underlying stream (stdin is left open)."""
        if self.path != "<stdin>":
            self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_capture(path: str | os.PathLike[str], *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> CaptureFile:
    """Open a pcap/pcapng (optionally gzip-compressed) file, or ``-`` for stdin.

    Raises CaptureOpenError (missing, directory, unreadable) or InvalidCaptureError
    (not a capture, empty, truncated header).
    """
    return CaptureFile(path, chunk_size=chunk_size)
