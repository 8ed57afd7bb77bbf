"""Byte streams under the readers: opening paths, stdin and gzip, and a refillable window."""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from ..errors import CaptureOpenError, InvalidCaptureError

#: RFC 1952 §2.3.1: ID1 ID2
GZIP_MAGIC = b"\x1f\x8b"


class ByteWindow:
    """A window on a byte stream that the readers walk records through.

    ``buf[0:end]`` holds stream bytes ``base .. base + end``. ``refill(keep)`` drops
    everything before ``keep`` and reads more, so a record cut by the window's edge is
    kept whole for the next walk. The window grows only when one record is larger than
    it, up to ``max_record``; memory therefore stays at about ``chunk_size`` whatever
    the stream's length.

    With ``keep_chunks`` above 1, refills go round a ring of that many buffers, moving the
    kept bytes to the next one instead of to the front of this one: a batch stays intact
    while the next ``keep_chunks - 1`` chunks are read, so a pipeline can decode ahead while
    an earlier batch is still being used. The ring's buffers are made once and reused (no
    allocation per chunk, so nothing for the allocator to fragment).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        path: str,
        chunk_size: int,
        low_latency: bool = False,
        position: Callable[[], int] | None = None,
        keep_chunks: int = 1,
    ) -> None:
        self.path = path
        self._stream = stream
        self._chunk = chunk_size
        # numpy memory is not zeroed: the reads fill it
        self._ring: list[npt.NDArray[np.uint8] | None] = [np.empty(chunk_size, dtype=np.uint8)] + [None] * (keep_chunks - 1)
        self._at = 0
        self.buf: npt.NDArray[np.uint8] = self._ring[0]  # type: ignore[assignment]
        self.base = 0
        self.end = 0
        self.eof = False
        self._low_latency = low_latency
        self._position = position
        #: records longer than their snaplen: read anyway (as libpcap does), counted here
        self.caplen_over_snaplen = 0

    @property
    def consumed(self) -> int:
        """Bytes of the underlying (possibly compressed) input read so far."""
        if self._position is not None:
            return self._position()
        return self.base + self.end

    def refill(self, keep: int, need: int = 0) -> bool:
        """Discard ``buf[:keep]``, read more; return False at end of stream.

        ``need`` asks for at least that many bytes after ``keep`` (a large record).
        """
        tail = self.end - keep
        size = max(self._chunk, need + 64)
        if keep or size > len(self.buf):
            self._at = (self._at + 1) % len(self._ring) if keep else self._at
            target = self._ring[self._at]
            if target is None or size > len(target):
                target = self._ring[self._at] = np.empty(max(size, len(self.buf)), dtype=np.uint8)
            target[:tail] = self.buf[keep : self.end]  # numpy copes with the overlap of a ring of one
            self.buf = target
        self.base += keep
        self.end = tail
        if self.eof:
            return False
        view = memoryview(self.buf)
        got_any = False
        while self.end < len(self.buf):
            try:
                if self._low_latency:
                    n = self._stream.readinto1(view[self.end :])  # type: ignore[attr-defined]
                else:
                    n = self._stream.readinto(view[self.end :])  # type: ignore[attr-defined]
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise InvalidCaptureError(
                    f"compressed stream is damaged ({exc})", path=self.path, offset=self.base + self.end
                ) from None
            except OSError as exc:
                raise CaptureOpenError(
                    f"read failed: {exc.strerror or exc}", path=self.path, offset=self.base + self.end
                ) from None
            if not n:
                self.eof = True
                break
            self.end += n
            got_any = True
            if self._low_latency and self.end >= need:
                break
        return got_any



def open_stream(
    path: str | os.PathLike[str],
) -> tuple[BinaryIO, str, int | None, Callable[[], int] | None]:
    """Open ``path`` (``-`` is stdin), unwrapping gzip; return (stream, name, total, position).

    ``total`` is the on-disk size for the progress bar (``None`` for stdin); ``position``,
    for compressed input, tells how many compressed bytes were consumed so far.
    """
    name = os.fspath(path)
    if name == "-":
        raw: BinaryIO = sys.stdin.buffer
        total = None
        name = "<stdin>"
    else:
        if os.path.isdir(name):
            raise CaptureOpenError("is a directory, not a capture file", path=name)
        try:
            raw = open(name, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
        except FileNotFoundError:
            raise CaptureOpenError("no such file", path=name) from None
        except PermissionError:
            raise CaptureOpenError("permission denied", path=name) from None
        except OSError as exc:
            raise CaptureOpenError(f"cannot open ({exc.strerror or exc})", path=name) from None
        try:
            total = os.fstat(raw.fileno()).st_size
        except OSError:
            total = None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw, 1 << 16)  # type: ignore[arg-type]
    try:
        head = buffered.peek(2)[:2]
    except OSError as exc:
        raise CaptureOpenError(f"read failed: {exc.strerror or exc}", path=name, offset=0) from None
    if head == GZIP_MAGIC:
        stream: BinaryIO = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
        return stream, name, total, buffered.tell
    return buffered, name, total, None
