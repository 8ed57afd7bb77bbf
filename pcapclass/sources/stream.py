"""Byte streams under the readers: opening paths, stdin and gzip, and a refillable window."""

from __future__ import annotations

import io
import os
import sys
import zlib
from collections.abc import Callable
from typing import BinaryIO, cast

import numpy as np
import numpy.typing as npt

from ..errors import CaptureError, CaptureOpenError, InvalidCaptureError
from .batch import ReadAnomalies

#: RFC 1952 §2.3.1: ID1 ID2
GZIP_MAGIC = b"\x1f\x8b"
#: zlib's window bits for a gzip wrapper (16 + MAX_WBITS): zlib parses the member header and
#: checks its trailer (CRC-32 and ISIZE, RFC 1952 §2.3.1)
GZIP_WBITS = 16 + zlib.MAX_WBITS
#: compressed bytes read from the file, and given to zlib, at a time
GZIP_READ = 1 << 16
#: after zlib refuses a piece, it is given again a byte at a time, to keep all that
#: decompresses before the damage
GZIP_SALVAGE = 1


class GzipStream(io.RawIOBase):
    """A gzip file (RFC 1952) decompressed as it is read, member after member as gzip reads them.

    Written over zlib rather than with ``gzip.GzipFile``, which cannot give what a capture
    reader needs: every byte decompressed before a fault (GzipFile's buffered ``readinto``
    drops the piece it was filling), the decompressed offset of the fault, the compressed
    bytes consumed without ``tell`` (a pipe cannot tell), and bytes after the last member
    ignored and counted, as gzip(1) ignores them, rather than the whole file refused. A fault
    raises InvalidCaptureError at its decompressed offset.
    """

    def __init__(self, raw: BinaryIO, *, path: str) -> None:
        super().__init__()
        self.path = path
        self._raw = raw
        self._inflate = zlib.decompressobj(GZIP_WBITS)
        #: compressed bytes read, not yet given to zlib
        self._pending = b""
        self._piece = GZIP_READ
        #: compressed bytes read from the file so far
        self.consumed = 0
        #: decompressed bytes handed out so far
        self.produced = 0
        #: bytes after the last member that start no new member (ignored)
        self.trailing_bytes = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _read_raw(self) -> bytes:
        data = self._raw.read(GZIP_READ)
        self.consumed += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        while not self._done:
            if self._inflate.eof and not self._next_member():
                break
            self._pending = self._pending or self._read_raw()
            piece, rest = self._pending[: self._piece], self._pending[self._piece :]
            before = self._inflate.copy() if self._piece > GZIP_SALVAGE else None
            try:
                out = self._inflate.decompress(piece, len(view))
            except zlib.error as exc:
                if before is None:
                    raise InvalidCaptureError(f"damaged gzip data ({exc}; the byte offset is in the decompressed data)",
                                              path=self.path, offset=self.produced) from None  # fmt: skip
                self._inflate, self._piece = before, GZIP_SALVAGE
                continue
            self._pending = (self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail) + rest
            if out:
                view[: len(out)] = out
                self.produced += len(out)
                return len(out)
            if not piece and not self._inflate.eof:  # no input left, no output pending
                raise InvalidCaptureError(
                    f"truncated gzip: the compressed data ends after {self.consumed} bytes, before its end-of-stream marker"
                    " (the byte offset is in the decompressed data)", path=self.path, offset=self.produced)  # fmt: skip
        return 0

    def _next_member(self) -> bool:
        """After a member's end: start the next one, or, at the end of the file or before bytes
        that are no member, stop (counting those bytes) and return False."""
        rest = self._pending
        while len(rest) < len(GZIP_MAGIC) and (more := self._read_raw()):
            rest += more
        if rest[: len(GZIP_MAGIC)] != GZIP_MAGIC:
            self.trailing_bytes = len(rest) + sum(map(len, iter(self._read_raw, b"")))
            self._done = True
            return False
        self._inflate = zlib.decompressobj(GZIP_WBITS)
        self._pending = rest
        return True

    def close(self) -> None:
        self._raw.close()
        super().close()


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
        #: what the readers read anyway and counted
        self.anomalies = ReadAnomalies()
        #: the read error that ended the stream early: the bytes before it are still walked
        self.fault: CaptureError | None = None

    @property
    def consumed(self) -> int:
        """Bytes of the underlying (possibly compressed) input read so far."""
        if self._position is not None:
            return self._position()
        return self.base + self.end

    def refill(self, keep: int, need: int = 0) -> bool:
        """Discard ``buf[:keep]``, read more; return False at end of stream.

        A read error ends the stream too, kept in ``fault`` with the bytes read before it: the
        reader walks those, then raises ``cut(...)``.

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
        view = self.buf.data
        got_any = False
        while self.end < len(self.buf):
            try:
                if self._low_latency:
                    n = self._stream.readinto1(view[self.end :])  # type: ignore[attr-defined]
                else:
                    n = self._stream.readinto(view[self.end :])  # type: ignore[attr-defined]
            except CaptureError as exc:
                self.fault, n = exc, 0
            except OSError as exc:
                self.fault, n = CaptureOpenError(f"read failed: {exc.strerror or exc}", path=self.path, offset=self.base + self.end), 0
            if not n:
                self.eof = True
                break
            self.end += n
            got_any = True
            if self._low_latency and self.end >= need:
                break
        return got_any

    def cut(self, message: str, *, offset: int, packet: int | None = None) -> CaptureError:
        """The error for a stream that ended where a reader needed more: the read fault that
        ended it early (the cause) if there was one, else ``message`` at ``offset``."""
        if self.fault is not None:
            return type(self.fault)(self.fault.message, path=self.path, offset=self.fault.offset, packet=packet)
        return InvalidCaptureError(message, path=self.path, offset=offset, packet=packet)


def open_stream(
    path: str | os.PathLike[str],
) -> tuple[BinaryIO, str, int | None, Callable[[], int] | None]:
    """Open ``path`` (``-`` is stdin), unwrapping gzip; return (stream, name, total, position).

    ``total`` is the on-disk size for the progress bar (``None`` for stdin); ``position``,
    for compressed input, tells how many compressed bytes were consumed so far. The stream of
    a gzip file is a GzipStream.
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
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw, 1 << 16)  # type: ignore[type-var]
    try:
        head = buffered.peek(2)[:2]
    except OSError as exc:
        raise CaptureOpenError(f"read failed: {exc.strerror or exc}", path=name, offset=0) from None
    if head == GZIP_MAGIC:
        gz = GzipStream(buffered, path=name)
        return cast(BinaryIO, gz), name, total, lambda: gz.consumed
    return buffered, name, total, None
