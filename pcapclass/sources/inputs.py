"""CAPTURE arguments resolved to the captures to read, in capture-time order.

An argument is a file, a directory (walked recursively; a member is taken when its bytes are a
pcap, a pcapng or a gzip-compressed one of them, whatever its name), a glob (shorthand for the
names it matches, each taken as if named) or ``-`` (stdin). The same file reached twice is read
once. Files are ordered by their first packet's time, ties by path, so that the files of a ring
buffer (``dumpcap -b``, ``tcpdump -G -C``) read as one continuous capture; stdin comes last, as
its time cannot be known without reading it.

A file that cannot be opened or is not a capture does not stop the others: its entry carries
the error (files without a time, failed or packet-less, come after the timed ones, by path).

Example::

    for capture in resolve_captures(["/var/captures", "extra/*.pcapng.gz"]):
        if capture.error is not None:
            print(capture.error)
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import CaptureError, CaptureOpenError
from . import CaptureFile
from .pcap import is_pcap
from .pcapng import is_pcapng
from .stream import GZIP_MAGIC, open_stream

__all__ = ["STDIN", "CaptureInput", "resolve_captures"]

STDIN = "-"
#: bytes read to find the first packet: one small chunk, whatever the file's size
PEEK_CHUNK = 64 << 10


@dataclass(frozen=True, slots=True)
class CaptureInput:
    """One capture to read: its path, its first packet's time, or why it cannot be read."""

    path: str
    #: the first packet's time in ns since the epoch; None for stdin, a capture without
    #: packets and a file that failed
    first_ns: int | None = None
    error: CaptureError | None = None

    @property
    def missing(self) -> CaptureError | None:
        """The error of what resolving found no file for (a glob matching nothing, a directory
        without captures): all there is to it. None for a file, even one whose resolving failed:
        it is read, so that its fault is reported as reading reports it."""
        return self.error if not os.path.isfile(self.path) else None

    def continues(self, last_ns: int | None) -> bool:
        """Whether this capture starts where one whose last packet came at ``last_ns`` stopped
        (no earlier: the next file of a ring buffer), so that it carries on its flows. One that
        overlaps it in time, or whose time is unknown (standard input), starts afresh."""
        return self.first_ns is not None and last_ns is not None and self.first_ns >= last_ns

    @property
    def size(self) -> int | None:
        """Its bytes, or None for stdin, a pipe, and what cannot be read."""
        try:
            return os.path.getsize(self.path) if self.path != "-" and os.path.isfile(self.path) else None
        except OSError:
            return None


def resolve_captures(arguments: Sequence[str | os.PathLike[str]]) -> list[CaptureInput]:
    """The captures ``arguments`` name, de-duplicated and in capture-time order.

    Never raises for a bad argument: a missing file, a glob matching nothing, a directory
    without captures, an unreadable or unrecognised file each give an entry with ``error``.
    """
    seen: set[str] = set()
    found: list[CaptureInput] = []
    stdin = False
    for name in arguments:
        argument = os.fspath(name)
        if argument == STDIN:
            stdin = True
            continue
        for path in _expand(argument, found):
            if (key := os.path.realpath(path)) not in seen:
                seen.add(key)
                found.append(_first_packet(path))
    found.sort(key=lambda c: (c.first_ns is None, c.first_ns or 0, c.path))
    return found + [CaptureInput(STDIN)] * stdin


def _expand(argument: str, errors: list[CaptureInput]) -> Iterator[str]:
    """The files ``argument`` stands for: itself, what it matches, and the members of a directory
    whose bytes are a capture."""
    if os.path.lexists(argument):
        paths = [argument]
    elif glob.has_magic(argument):
        paths = sorted(glob.glob(argument, recursive=True))
        if not paths:
            errors.append(CaptureInput(argument, error=CaptureOpenError("no file matches this pattern", path=argument)))
    else:
        paths = [argument]  # missing: reading it reports it
    for path in paths:
        if not os.path.isdir(path):
            yield path
            continue
        before = len(errors)
        members = [member for member in sorted(_walk(path, errors)) if _is_capture(member, errors)]
        if not members and len(errors) == before:
            errors.append(CaptureInput(path, error=CaptureOpenError("no capture file in this directory", path=path)))
        yield from members


def _walk(directory: str, errors: list[CaptureInput]) -> Iterator[str]:
    def report(exc: OSError) -> None:
        name = os.fspath(exc.filename or directory)
        errors.append(CaptureInput(name, error=CaptureOpenError(f"cannot list ({exc.strerror or exc})", path=name)))

    for root, dirs, files in os.walk(directory, onerror=report):
        dirs.sort()
        yield from (os.path.join(root, name) for name in files)


def _is_capture(path: str, errors: list[CaptureInput]) -> bool:
    """Whether the file's bytes (decompressed, for gzip) start as a pcap or pcapng; a file that
    cannot be opened is reported, as it may well be a capture."""
    if not os.path.isfile(path):
        return False  # a socket, a fifo, a dangling link: nothing a capture directory needs
    try:
        with open(path, "rb") as raw:
            if raw.read(2) != GZIP_MAGIC:
                raw.seek(0)
                return _starts_capture(raw.read(4))
        stream, *_ = open_stream(path)
        with stream:
            head = b""
            while len(head) < 4 and (more := stream.read(4 - len(head))):
                head += more
        return _starts_capture(head)
    except CaptureError as exc:
        errors.append(CaptureInput(path, error=exc))
    except OSError as exc:
        errors.append(CaptureInput(path, error=CaptureOpenError(f"cannot open ({exc.strerror or exc})", path=path)))
    return False


def _starts_capture(head: bytes) -> bool:
    return is_pcap(head) or is_pcapng(head)


def _first_packet(path: str) -> CaptureInput:
    """The capture's entry with its first packet's time, read through the capture readers; a
    pipe or a device (``<(zcat ring.pcap.gz)``) is not peeked at, as what is read from it is
    gone: like stdin, its time is not known."""
    if os.path.exists(path) and not os.path.isfile(path):
        return CaptureInput(path)
    try:
        with CaptureFile(path, chunk_size=PEEK_CHUNK) as capture:
            batch = next(iter(capture), None)
            first_ns = int(batch.ts_ns[0]) if batch is not None else None
    except CaptureError as exc:
        return CaptureInput(path, error=exc)
    return CaptureInput(path, first_ns=first_ns)
